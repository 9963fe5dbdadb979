"""kill -9 mid-race, then `run --resume`: the attempts in progress are not lost (each
runs its interrupted iteration again and the race is decided as usual), and a race
already decided is not run again."""

from __future__ import annotations

from pathlib import Path

from gitrepo import git, make_repo
from helpers import PY, command_agent, loop, run_cli, supervisor_table
from resume_support import Harness

NO_STUCK = {"same_failure": 0, "same_output": 0, "oscillation": False}

ATTEMPT = """
import os, pathlib, sys, time
style, marks = sys.argv[1], pathlib.Path(sys.argv[2])
sys.stdin.read()
(marks / f"{os.getpid()}.tmp").write_text(str(os.getpgid(0)))
os.replace(marks / f"{os.getpid()}.tmp", marks / f"{style}.{os.getpid()}")
if style == "fast" and (marks / "go").exists():
    pathlib.Path("answer.txt").write_text("42\\n")
    print("fast: wrote the answer", flush=True)
    sys.exit(0)
print(f"{style}: thinking", flush=True)
time.sleep(120)
"""


def write_race(h: Harness) -> Path:
    make_repo(h.tmp_path / "repo")
    marks = h.tmp_path / "marks"
    marks.mkdir()
    styles = ("slow", "fast", "slower")
    agents = [command_agent(s, ATTEMPT, s, str(marks), stdin=True) for s in styles]
    check = [PY, "-c", "import sys; sys.exit(open('answer.txt').read() != '42\\n')"]
    text = "\n".join(
        [
            supervisor_table(4),
            *agents,
            loop(
                "fix",
                "slow",
                agents=list(styles),
                workspace={"repo": "repo"},
                checks=[{"run": check}],
                max_iterations=1,
                stuck=NO_STUCK,
            ),
        ]
    )
    h.config.write_text(text, encoding="utf-8")
    return marks


def attempts_started(h: Harness, marks: Path) -> list[Path]:
    found = [p for p in marks.iterdir() if p.name != "go" and p.suffix != ".tmp"]
    h.groups.update(int(p.read_text()) for p in found)
    return found


def test_a_race_killed_mid_way_resumes_its_attempts_and_is_not_rerun_once_decided(
    harness: Harness,
) -> None:
    h = harness
    marks = write_race(h)
    first = h.start()
    first.until("three attempts' agents", lambda: len(attempts_started(h, marks)) == 3)
    first.kill9()
    (marks / "go").write_text("")

    second, summary = h.resume_to_end(timeout=60)
    assert summary["exit_code"] == 0, second.stderr()
    states = {loop["name"]: (loop["state"], loop["reason"]) for loop in summary["loops"]}
    assert states["fix.2"][0] == "succeeded"
    assert states["fix.1"] == ("stopped", "lost the race: fix.2 won")
    assert states["fix.3"] == ("stopped", "lost the race: fix.2 won")
    assert states["fix"][1].startswith("attempt 2 (fix.2, agent fast) won at ")
    # Each attempt in progress ran its iteration 1 again: the agents started twice.
    assert len(attempts_started(h, marks)) == 6
    repo = h.tmp_path / "repo"
    assert git("rev-parse", "loopvisor/fix", cwd=repo) == git(
        "rev-parse", "loopvisor/fix.2", cwd=repo
    )

    # Decided (and its run ended): nothing to run again.
    third = run_cli("run", h.config, "--resume", "--state-dir", h.state, cwd=h.tmp_path)
    assert third.returncode == 3
    assert "nothing to resume" in third.stderr
    assert len(attempts_started(h, marks)) == 6  # no agent started again
