"""Step-in on a running Supervisor: a sim loop's chat and hand-back, a stuck loop handed
back to a normal iteration, a command loop's turn killed, and a loop waiting for a
slot paused at once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import (
    GRANDCHILD_SCRIPT,
    Recorded,
    command_agent,
    load,
    loop,
    read_pids,
    run_recorded,
    sim_agent,
    supervisor_table,
    table,
    wait_event,
    wait_for,
    wait_gone,
)
from runtime_support import assert_reasons, workspaces

from supervisor import events as ev
from supervisor.agents.base import ForksSessions
from supervisor.runtime import Supervisor
from supervisor.runtime_ops import INTERACTIVE_CUT

pytestmark = pytest.mark.anyio


async def test_step_in_chat_and_hand_back_on_a_sim_loop(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("s", rate=100, reply_tokens=60, converge_after=2, done_text="DONE"),
        loop("L", "s", done_marker="DONE", max_iterations=5),
    )
    replies: list[str] = []

    async def during(rec: Recorded) -> None:
        sup = rec.supervisor
        await wait_event(rec, ev.AgentOutput, loop="L")  # mid-turn of iteration 1
        step = await sup.step_in("L")
        assert step.loop == "L"
        assert step.agent_kind == "sim"
        assert step.chat
        assert step.resume_argv is None
        assert step.workspace == str(tmp_path)
        assert sup.runners["L"].state == "paused"
        replies.append(await sup.chat("L", "what are you doing?"))
        await sup.hand_back("L")

    rec = await run_recorded(config, exit_when_idle=False, during=during)
    assert replies
    assert replies[0].strip()
    operator = [o for o in rec.of(ev.AgentOutput, "L") if o.stream == "operator"]
    assert [o.text for o in operator] == ["what are you doing?\n"]
    outcomes = [(f.iteration, f.outcome) for f in rec.of(ev.IterationFinished, "L")]
    assert outcomes == [(1, "interrupted"), (1, "continue"), (2, "succeeded")]
    result = rec.result("L")
    assert (result.state, result.iterations) == ("succeeded", 2)
    ops = [c.op for c in rec.of(ev.ControlApplied)]
    assert ops == ["step_in", "chat", "hand_back", "resume"]
    assert_reasons(rec)


async def test_step_in_on_a_stuck_loop_then_hand_back_runs_a_normal_iteration(
    tmp_path: Path,
) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("stubborn", behavior="stuck"),
        loop("L", "stubborn", done_marker="DONE", stuck={"same_output": 2}, max_iterations=3),
    )

    async def during(rec: Recorded) -> None:
        sup = rec.supervisor
        await wait_for(lambda: sup.runners["L"].state == "stuck")
        await sup.step_in("L")
        assert sup.runners["L"].state == "stuck"
        assert (await sup.chat("L", "try something else")).strip()
        await sup.hand_back("L")
        await wait_for(lambda: sup.runners["L"].finished)

    rec = await run_recorded(config, exit_when_idle=False, during=during)
    outcomes = [(f.iteration, f.outcome) for f in rec.of(ev.IterationFinished, "L")]
    assert outcomes == [(1, "continue"), (2, "stuck"), (3, "continue")]
    assert rec.result("L").state == "failed"


async def test_step_in_on_a_command_loop_kills_its_turn(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        command_agent("sleeper", GRANDCHILD_SCRIPT),
        loop("L", "sleeper", done_marker="DONE"),
    )
    pids_file = tmp_path / "pids.txt"

    async def during(rec: Recorded) -> None:
        await wait_for(lambda: len(read_pids(pids_file)) == 2)
        step = await rec.supervisor.step_in("L")
        assert (step.agent_kind, step.chat) == ("command", False)
        assert rec.supervisor.runners["L"].state == "paused"
        assert wait_gone(read_pids(pids_file), timeout=3) == []

    rec = await run_recorded(config, during=during)
    assert rec.result("L").state == "paused"
    assert [(f.iteration, f.outcome) for f in rec.of(ev.IterationFinished, "L")] == [
        (1, "interrupted")
    ]


async def test_step_in_while_waiting_for_a_slot_pauses_at_once(tmp_path: Path) -> None:
    """No turn has started, so nothing is thrown away and nobody waits for the slot."""
    workspaces(tmp_path, "a", "b")
    config = load(
        tmp_path,
        supervisor_table(max_concurrent=1),
        sim_agent("slow", rate=100, reply_tokens=150, converge_after=99),
        loop("a", "slow", workspace="a", done_marker="X", max_iterations=1),
        loop("b", "slow", workspace="b", done_marker="X", max_iterations=1),
    )
    took: list[float] = []
    b_tokens_when_paused: list[int] = []

    async def during(rec: Recorded) -> None:
        sup = rec.supervisor
        await wait_for(lambda: sup.runners["b"].state == "waiting")
        t = time.monotonic()
        await sup.step_in("b")
        took.append(time.monotonic() - t)
        assert sup.runners["b"].state == "paused"
        b_tokens_when_paused.append(sup.runners["b"].ledger.tokens_spent)
        await sup.hand_back("b")

    rec = await run_recorded(config, exit_when_idle=False, during=during)
    assert took[0] < 0.5  # a's 1.5 s turn is still running
    assert b_tokens_when_paused == [0]
    outcomes = [(f.loop, f.iteration, f.outcome) for f in rec.of(ev.IterationFinished)]
    assert ("b", 1, "continue") in outcomes
    assert [o for o in outcomes if o[0] == "b"] == [("b", 1, "interrupted"), ("b", 1, "continue")]
    assert next(f for f in rec.of(ev.IterationFinished, "b")).tokens == 0
    assert rec.result("b").state == "failed"  # max_iterations 1, no done marker


async def test_stepping_into_a_claude_code_fork_before_its_first_turn_forks_the_session(
    tmp_path: Path,
) -> None:
    """Until the fork's first turn, its session is its parent's: `claude --resume` alone
    would write the operator's turns into the parent's session; step-in forks it."""
    config = load(
        tmp_path,
        table("agents.cc", kind="claude-code", command="claude"),
        loop("fix", "cc", done_marker="DONE"),
    )
    sup = Supervisor(config)
    runner = sup.runners["fix"]
    assert isinstance(runner.agent, ForksSessions)
    runner.agent.fork_session("parent-session")  # what `fork.seed_fork` does
    runner.force_end("stopped", "not run here")
    step = await sup.step_in("fix")
    assert step.resume_argv == ("claude", "--resume", "parent-session", "--fork-session")
    runner.agent.restore("own-session", None)  # after its first turn: its own session
    step = await sup.step_in("fix")
    assert step.resume_argv == ("claude", "--resume", "own-session")


async def test_stepping_into_a_claude_code_fork_cuts_the_session_where_the_fork_does(
    tmp_path: Path,
) -> None:
    """A fork from iteration N resumes its parent's session at iteration N's last
    message (`fork.py`): step-in before the fork's first turn cuts it there too, or the
    operator would talk to a conversation holding the parent's later turns (the flags
    are pinned against the real CLI in tests/agents/test_claude_code_real_cli.py)."""
    config = load(
        tmp_path,
        table("agents.cc", kind="claude-code", command="claude"),
        loop("fix", "cc", done_marker="DONE"),
    )
    sup = Supervisor(config)
    runner = sup.runners["fix"]
    assert isinstance(runner.agent, ForksSessions)
    runner.agent.fork_session("parent-session", "message-uuid")  # what `fork.seed_fork` does
    runner.force_end("stopped", "not run here")
    seen: list[ev.Event] = []
    sup.add_sink(seen.append)
    step = await sup.step_in("fix")
    assert step.resume_argv == (
        "claude",
        "--resume",
        "parent-session",
        "--resume-session-at=message-uuid",
        "--fork-session",
    )
    # The interactive CLI does not honour the cut (measured): the operator is told.
    warned = [e for e in seen if isinstance(e, ev.Notice) and e.level == "warning"]
    assert [e.message for e in warned] == [INTERACTIVE_CUT]
