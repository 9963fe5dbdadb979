"""Pipelines with real agent processes and a real git repository: a loop with `after`
waits (`waiting: after lint-fix`) until its upstream ended, starts from its branch
(`base = "loop:lint-fix"`) with `$after_output` in its prompt; a failed upstream skips
it (`on_failure = "skip"`) or not (`"run"`)."""

from __future__ import annotations

from pathlib import Path

from gitrepo import git, make_repo
from helpers import command_agent, json_lines, loop, run_cli, supervisor_table, write_config

NO_STUCK = {"same_failure": 0, "same_output": 0, "oscillation": False}

LINTER = """
import pathlib
pathlib.Path("lint.txt").write_text("linted\\n")
print("lint fixed: 3 warnings gone")
"""
BUILDER = """
import pathlib, sys
prompt = sys.stdin.read()
pathlib.Path("prompt.txt").write_text(prompt)
pathlib.Path("built.txt").write_text(pathlib.Path("lint.txt").read_text())
print("built")
"""


def pipeline_toml(tmp_path: Path, lint_check: str, **build: object) -> Path:
    return write_config(
        tmp_path,
        supervisor_table(2),
        command_agent("linter", LINTER),
        command_agent("builder", BUILDER, stdin=True),
        loop(
            "lint-fix",
            "linter",
            workspace={"repo": "repo"},
            checks=[{"run": lint_check}],
            max_iterations=1,
            stuck=NO_STUCK,
        ),
        loop(
            "build",
            "builder",
            prompt="Build it. Before this:\n$after_output",
            workspace={"repo": "repo", "base": "loop:lint-fix"},
            checks=[{"run": "grep -q linted built.txt"}],
            max_iterations=1,
            stuck=NO_STUCK,
            **build,
        ),
    )


def states(events: list[dict[str, object]], name: str) -> list[tuple[object, object]]:
    return [(e["state"], e["reason"]) for e in events if e["type"] == "state" and e["loop"] == name]


def test_the_second_loop_starts_from_the_first_ones_branch_when_it_succeeded(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    config = pipeline_toml(tmp_path, "grep -q linted lint.txt")
    assert run_cli("check", config, cwd=tmp_path).returncode == 0
    run = run_cli("run", config, "--json", cwd=tmp_path, timeout=60)
    assert run.returncode == 0, run.stderr
    events = json_lines(run.stdout)
    assert states(events, "build")[0] == ("waiting", "after lint-fix")
    order = [
        (e["type"], e["loop"])
        for e in events
        if (e["type"], e.get("state")) in (("state", "succeeded"), ("iteration_started", None))
    ]
    assert order.index(("state", "lint-fix")) < order.index(("iteration_started", "build"))
    # Its worktree started at lint-fix's branch as it ended: lint.txt is there.
    lint_tip = git("rev-parse", "loopvisor/lint-fix", cwd=repo).strip()
    assert (
        git("merge-base", "--is-ancestor", lint_tip, "loopvisor/build", cwd=repo, check=False) == ""
    )
    assert git("show", "loopvisor/build:built.txt", cwd=repo) == "linted\n"
    prompt = git("show", "loopvisor/build:prompt.txt", cwd=repo)
    assert "## lint-fix: succeeded — the check passed in iteration 1" in prompt
    assert "lint fixed: 3 warnings gone" in prompt
    (lint, build) = events[-1]["loops"]
    assert (lint["state"], build["state"]) == ("succeeded", "succeeded")


def test_a_failed_upstream_skips_the_loop_or_runs_it_with_on_failure_run(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    config = pipeline_toml(tmp_path, "false")
    run = run_cli("run", config, "--json", cwd=tmp_path, timeout=60)
    events = json_lines(run.stdout)
    assert not [e for e in events if e["type"] == "iteration_started" and e["loop"] == "build"]
    (_, build) = events[-1]["loops"]
    assert (build["state"], build["reason"]) == (
        "stopped",
        'skipped: lint-fix failed (on_failure = "skip")',
    )
    assert not (tmp_path / ".loopvisor" / "worktrees" / "build").exists()

    run = run_cli("run", pipeline_toml(tmp_path, "false", on_failure="run"), "--json",
                  cwd=tmp_path, timeout=60)  # fmt: skip
    (_, build) = json_lines(run.stdout)[-1]["loops"]
    assert build["state"] == "succeeded"  # lint.txt was written, only its check failed


def test_waiting_on_a_stuck_loop_is_waiting_for_a_person(tmp_path: Path) -> None:
    """lint-fix is stuck (paused for a person): build, waiting on it, is too, so a
    headless run ends with exit code 4 instead of waiting forever."""
    make_repo(tmp_path / "repo")
    config = write_config(
        tmp_path,
        command_agent("linter", LINTER),
        command_agent("builder", BUILDER, stdin=True),
        loop("lint-fix", "linter", checks=[{"run": "false"}], stuck={"same_failure": 2}),
        loop("build", "builder", after=["lint-fix"], checks=[{"run": "true"}]),
    )
    run = run_cli("run", config, "--json", cwd=tmp_path, timeout=60)
    assert run.returncode == 4, run.stderr
    summary = json_lines(run.stdout)[-1]
    assert [(r["state"], r["reason"]) for r in summary["loops"]][1] == (
        "waiting",
        "after lint-fix",
    )
