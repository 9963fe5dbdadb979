"""Races (best-of-N) with real agent processes and a real git repository: three
command agents race from the same base; the second finishes first and wins, the
others are killed at once (their process groups gone) and charged only what they
reported; a race where every attempt fails fails with each one's reason."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from gitrepo import git, make_repo
from helpers import (
    PY,
    Recorded,
    command_agent,
    load,
    loop,
    run_recorded,
    supervisor_table,
    wait_event,
)

from supervisor import events as ev
from supervisor.spec import Config
from supervisor.worktree import prepare_worktrees

NO_STUCK = {"same_failure": 0, "same_output": 0, "oscillation": False}

ATTEMPT = """
import json, os, pathlib, sys, time
style, marks = sys.argv[1], pathlib.Path(sys.argv[2])
sys.stdin.read()
marks.mkdir(exist_ok=True)
(marks / f"{style}.pgid").write_text(str(os.getpgid(0)))
usage = {"input_tokens": 100, "output_tokens": 10, "usd": 0.001}
print(json.dumps({"loopvisor_usage": usage}), flush=True)
if style == "slow":
    time.sleep(60)
if style == "wrong":
    pathlib.Path("answer.txt").write_text("41\\n")
    print("wrote a wrong answer", flush=True)
    time.sleep(60)
pathlib.Path("answer.txt").write_text("0\\n" if style.startswith("bad") else "42\\n")
print(f"{style}: wrote the answer", flush=True)
"""


def race_config(tmp_path: Path, styles: tuple[str, ...], **race: object) -> Config:
    make_repo(tmp_path / "repo")
    marks = tmp_path / "marks"
    agents = [
        command_agent(s, ATTEMPT, s, str(marks), stdin=True, usage="json-lines") for s in styles
    ]
    config = load(
        tmp_path,
        supervisor_table(4),
        *agents,
        loop(
            "fix",
            styles[0],
            agents=list(styles),
            workspace={"repo": "repo"},
            checks=[
                {"run": [PY, "-c", "import sys; sys.exit(open('answer.txt').read() != '42\\n')"]}
            ],
            max_iterations=1,
            stuck=NO_STUCK,
            **race,
        ),
    )
    prepare_worktrees(config)
    return config


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.anyio
async def test_the_second_attempt_finishes_first_wins_and_the_others_are_killed(
    tmp_path: Path,
) -> None:
    config = race_config(tmp_path, ("slow", "fast", "wrong"))
    marks = tmp_path / "marks"
    gone_after: list[float] = []

    async def watch(rec: Recorded) -> None:
        """From the decision on, the losers' process groups die within a second."""
        await wait_event(
            rec, ev.LoopStateChanged, loop="fix", where=lambda e: e.state == "succeeded"
        )
        decided = anyio.current_time()
        pgids = [int((marks / f"{s}.pgid").read_text()) for s in ("slow", "wrong")]
        with anyio.fail_after(1.0):
            while any(group_alive(p) for p in pgids):  # noqa: ASYNC110 (no event for it)
                await anyio.sleep(0.02)
        gone_after.append(anyio.current_time() - decided)

    rec = await run_recorded(config, timeout=30, during=watch)
    assert gone_after
    assert gone_after[0] < 1.0
    summary = rec.summary
    assert summary is not None
    assert summary.exit_code == 0
    results = {r.name: r for r in summary.loops}
    assert [*results] == ["fix", "fix.1", "fix.2", "fix.3"]
    assert results["fix.2"].state == "succeeded"
    assert (results["fix.1"].state, results["fix.1"].reason) == (
        "stopped",
        "lost the race: fix.2 won",
    )
    assert (results["fix.3"].state, results["fix.3"].reason) == (
        "stopped",
        "lost the race: fix.2 won",
    )
    fix = results["fix"]
    assert fix.state == "succeeded"
    assert fix.reason.startswith("attempt 2 (fix.2, agent fast) won at ")
    assert "fix.1 stopped 110 tokens $0.0010" in fix.reason
    # Each charged only what it reported before it was cut off; the race has the sum.
    assert [results[n].tokens for n in ("fix.1", "fix.2", "fix.3")] == [110, 110, 110]
    assert fix.tokens == 330
    # The winner's tip is the race's branch.
    repo = tmp_path / "repo"
    assert git("rev-parse", "loopvisor/fix", cwd=repo) == git(
        "rev-parse", "loopvisor/fix.2", cwd=repo
    )
    assert git("show", "loopvisor/fix:answer.txt", cwd=repo) == "42\n"


@pytest.mark.anyio
async def test_a_race_where_every_attempt_fails_fails_with_each_reason(tmp_path: Path) -> None:
    config = race_config(tmp_path, ("bad", "bad2"))
    rec = await run_recorded(config, timeout=30)
    assert rec.summary is not None
    assert rec.summary.exit_code == 1
    fix = rec.summary.loops[0]
    assert fix.state == "failed"
    assert fix.reason.startswith("no attempt won: fix.1 failed: max_iterations (1) reached")
    assert "fix.2 failed: max_iterations (1) reached" in fix.reason
