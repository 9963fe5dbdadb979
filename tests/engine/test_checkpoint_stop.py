"""A worktree loop cut off mid-turn (operator stop, a budget, the run shut down) still
gets a checkpoint commit of what its agent had changed: nothing is lost, and the
journal records the commit as the iteration's, outcome `stopped`, with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from gitrepo import commits, git, make_repo
from helpers import Recorded, command_agent, load, loop, run_recorded, sim_agent, wait_event

from supervisor import events as ev
from supervisor.worktree import prepare_worktrees

# Writes its change, says so, then works forever (until it is stopped).
WRITER = """
import pathlib, sys, time
pathlib.Path("app.py").write_text("half done\\n")
print("WROTE", flush=True)
time.sleep(600)
"""


def _config(tmp_path: Path, **keys: object):  # type: ignore[no-untyped-def]
    make_repo(tmp_path / "repo")
    config = load(
        tmp_path,
        command_agent("writer", WRITER),
        loop(
            "fix",
            "writer",
            workspace={"repo": "repo", "worktree": True},
            done_marker="DONE",
            **keys,
        ),
    )
    prepare_worktrees(config)
    return config


async def _wrote(rec: Recorded) -> None:
    await wait_event(rec, ev.AgentOutput, loop="fix", where=lambda e: "WROTE" in e.text)


def _stopped_commit(tmp_path: Path, rec: Recorded, why: str) -> None:
    (made,) = commits(tmp_path / "repo", "loopvisor/fix")
    assert made["Loopvisor-Outcome"] == "stopped"
    assert made["Loopvisor-Iteration"] == "1"
    assert why in made["subject"]
    assert git("show", f"{made['sha']}:app.py", cwd=tmp_path / "repo") == "half done\n"
    (finished,) = rec.of(ev.IterationFinished, "fix")
    assert (finished.outcome, finished.commit) == ("stopped", made["sha"])
    assert why in finished.reason


@pytest.mark.anyio
async def test_an_operator_stop_mid_turn_commits_what_the_agent_changed(tmp_path: Path) -> None:
    config = _config(tmp_path)

    async def stop(rec: Recorded) -> None:
        await _wrote(rec)
        await rec.supervisor.stop("fix")

    rec = await run_recorded(config, during=stop, timeout=30)
    assert rec.result("fix").state == "stopped"
    _stopped_commit(tmp_path, rec, "stopped by the operator")


@pytest.mark.anyio
async def test_a_shutdown_mid_turn_commits_what_the_agent_changed(tmp_path: Path) -> None:
    """What Ctrl-C / SIGTERM of `run` does (`shutdown_now`)."""
    config = _config(tmp_path)

    async def shut(rec: Recorded) -> None:
        await _wrote(rec)
        rec.supervisor.shutdown_now("interrupted by SIGTERM")

    rec = await run_recorded(config, during=shut, timeout=30)
    _stopped_commit(tmp_path, rec, "interrupted by SIGTERM")


@pytest.mark.anyio
async def test_a_wall_budget_cut_mid_turn_commits_what_the_agent_changed(tmp_path: Path) -> None:
    config = _config(tmp_path, budget={"wall": "2s"})

    async def nothing(rec: Recorded) -> None:
        await _wrote(rec)
        await wait_event(rec, ev.IterationFinished, loop="fix", timeout=20)

    rec = await run_recorded(config, during=nothing, timeout=30)
    assert rec.result("fix").state == "exhausted"
    _stopped_commit(tmp_path, rec, "wall budget")


@pytest.mark.anyio
async def test_a_stopped_turns_commit_and_row_carry_what_the_ledger_charged(
    tmp_path: Path,
) -> None:
    """The cut-off turn was charged (the ledger has it): its iteration's row and its
    commit's trailers say so, instead of 0 tokens and $0."""
    make_repo(tmp_path / "repo")
    config = load(
        tmp_path,
        sim_agent("a", behavior="stall", stall_after=1, rate=0, reply_tokens=3),
        loop("fix", "a", workspace={"repo": "repo", "worktree": True}, done_marker="DONE"),
    )
    prepare_worktrees(config)

    async def stop(rec: Recorded) -> None:
        await wait_event(rec, ev.UsageCharged, loop="fix", where=lambda e: e.output_tokens > 0)
        (config.loop("fix").workspace / "app.py").write_text("half done\n")  # its change
        await rec.supervisor.stop("fix")

    rec = await run_recorded(config, during=stop, timeout=30)
    charged = [e for e in rec.of(ev.UsageCharged, "fix") if e.iteration == 1]
    tokens, usd = sum(e.tokens for e in charged), sum(e.usd for e in charged)
    assert tokens > 0
    (finished,) = rec.of(ev.IterationFinished, "fix")
    assert finished.outcome == "stopped"
    assert (finished.tokens, finished.usd) == (tokens, round(usd, 6))
    (made,) = commits(tmp_path / "repo", "loopvisor/fix")
    assert made["sha"] == finished.commit
    assert made["Loopvisor-Tokens"] == str(tokens)
    assert made["Loopvisor-USD"] == f"{usd:.6f}"
