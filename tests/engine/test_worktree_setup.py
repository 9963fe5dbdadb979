"""`setup` commands: run once after a loop's worktree is created, like checks (own
process group, allow-listed environment, output in the transcript); a failure fails
the loop with its reason. Real git repositories, real processes."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
from helpers import run_recorded
from landrepo import configure, make_repo

from supervisor import events as ev
from supervisor.worktree import prepare_worktrees

PY = sys.executable


SETUP = (
    '["echo prepared >> setup.log", '
    f'["{PY}", "-c", "import os; print(\'repo:\', os.environ[\'LOOPVISOR_REPO\'])"]]'
)


def test_setup_runs_once_after_the_worktree_is_made_with_output_in_the_transcript(
    tmp_path: Path,
) -> None:
    make_repo(tmp_path / "repo", {"app.py": "v1\n", ".gitignore": "setup.log\n"})
    config = configure(tmp_path, setup=SETUP)
    prepare_worktrees(config)
    work = config.loop("fix").workspace
    rec = anyio.run(run_recorded, config)
    assert rec.result("fix").state == "succeeded"
    assert (work / "setup.log").read_text() == "prepared\n"
    outputs = [e for e in rec.of(ev.AgentOutput, "fix") if e.stream == "setup"]
    assert any(f"repo: {(tmp_path / 'repo').resolve()}" in e.text for e in outputs)
    notices = [e.message for e in rec.of(ev.Notice, "fix")]
    assert any(m.startswith("setup 2/2 done:") for m in notices)
    again = anyio.run(run_recorded, config)  # the same worktree: no setup again
    assert again.result("fix").state == "succeeded"
    assert (work / "setup.log").read_text() == "prepared\n"
    assert not [e for e in again.of(ev.AgentOutput, "fix") if e.stream == "setup"]


def test_a_failing_setup_fails_the_loop_with_its_reason_and_runs_again_next_time(
    tmp_path: Path,
) -> None:
    make_repo(tmp_path / "repo")
    config = configure(tmp_path, setup='["echo npm ERR! missing lockfile; exit 3"]')
    prepare_worktrees(config)
    rec = anyio.run(run_recorded, config)
    result = rec.result("fix")
    assert result.state == "failed"
    assert result.iterations == 0
    assert result.reason.startswith("setup `echo npm ERR! missing lockfile; exit 3` failed: exit 3")
    assert any("npm ERR! missing lockfile" in e.text for e in rec.of(ev.AgentOutput, "fix"))
    again = anyio.run(run_recorded, config)
    assert again.result("fix").reason.startswith("setup `echo npm ERR!")  # still due
