"""kill -9 while a pipeline loop waits on its upstream, then `run --resume`: it waits
again (`waiting: after lint-fix`) and starts once its upstream succeeded."""

from __future__ import annotations

from pathlib import Path

from gitrepo import make_repo
from helpers import command_agent, loop, supervisor_table
from resume_support import Harness

NO_STUCK = {"same_failure": 0, "same_output": 0, "oscillation": False}

LINTER = """
import os, pathlib, sys, time
marks = pathlib.Path(sys.argv[1])
(marks / f"{os.getpid()}.tmp").write_text(str(os.getpgid(0)))
os.replace(marks / f"{os.getpid()}.tmp", marks / f"lint.{os.getpid()}")
if not (marks / "go").exists():
    time.sleep(120)
pathlib.Path("lint.txt").write_text("linted\\n")
print("linted", flush=True)
"""
BUILDER = """
import pathlib
pathlib.Path("built.txt").write_text(pathlib.Path("lint.txt").read_text())
print("built", flush=True)
"""


def started(h: Harness, marks: Path) -> list[Path]:
    found = [p for p in marks.iterdir() if p.name.startswith("lint.")]
    h.groups.update(int(p.read_text()) for p in found)
    return found


def test_a_loop_waiting_on_its_upstream_waits_again_after_resume(harness: Harness) -> None:
    h = harness
    make_repo(h.tmp_path / "repo")
    marks = h.tmp_path / "marks"
    marks.mkdir()
    h.config.write_text(
        "\n".join(
            [
                supervisor_table(2),
                command_agent("linter", LINTER, str(marks)),
                command_agent("builder", BUILDER),
                loop(
                    "lint-fix",
                    "linter",
                    workspace={"repo": "repo"},
                    checks=[{"run": "grep -q linted lint.txt"}],
                    max_iterations=1,
                    stuck=NO_STUCK,
                ),
                loop(
                    "build",
                    "builder",
                    workspace={"repo": "repo", "base": "loop:lint-fix"},
                    checks=[{"run": "grep -q linted built.txt"}],
                    max_iterations=1,
                    stuck=NO_STUCK,
                ),
            ]
        ),
        encoding="utf-8",
    )
    first = h.start()
    first.wait_for(
        "build waiting",
        lambda e: e["type"] == "state" and e["loop"] == "build" and e["state"] == "waiting",
    )
    first.until("the linter running", lambda: len(started(h, marks)) == 1)
    first.kill9()
    (marks / "go").write_text("")

    second = h.start(resume=True)
    waiting = second.wait_for(
        "build waiting again",
        lambda e: e["type"] == "state" and e["loop"] == "build",
    )
    assert (waiting["state"], waiting["reason"]) == ("waiting", "after lint-fix")
    summary = second.finish(60)
    assert summary["exit_code"] == 0, second.stderr()
    assert [(lp["name"], lp["state"]) for lp in summary["loops"]] == [
        ("lint-fix", "succeeded"),
        ("build", "succeeded"),
    ]
