"""Issue 11, item 2: pause means no more spending, whatever the loop was waiting for.

Two loops share one slot; `b` waits while `a` runs a 1.5 s turn. Pausing `b` must
keep it from starting a turn when the slot frees (the defect: `b` ran a whole turn
after the pause). A pause asked for during a turn shows `pausing` until the turn
ends; an operator note queued before the pause is still delivered after it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Recorded, load, loop, run_recorded, sim_agent, supervisor_table, wait_for

from supervisor import events as ev
from supervisor.spec import Config

pytestmark = pytest.mark.anyio


def _two_loops_one_slot(tmp_path: Path) -> Config:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    return load(
        tmp_path,
        supervisor_table(max_concurrent=1),
        sim_agent("slow", rate=100, reply_tokens=150, converge_after=99),
        loop("a", "slow", workspace="a", done_marker="X", max_iterations=1),
        loop("b", "slow", workspace="b", done_marker="X", max_iterations=1),
    )


async def test_a_loop_paused_while_waiting_for_a_slot_starts_no_turn(tmp_path: Path) -> None:
    config = _two_loops_one_slot(tmp_path)
    b_tokens_after_a: list[int] = []
    b_state_after_a: list[str] = []

    async def during(rec: Recorded) -> None:
        sup = rec.supervisor
        await wait_for(lambda: sup.runners["b"].state == "waiting")
        await sup.inject("b", "use the helper in utils.py")
        await sup.pause("b")
        await wait_for(lambda: sup.runners["a"].finished)
        # a's slot is free now: b had every chance to start a turn, and must not have.
        await wait_for(lambda: sup.runners["b"].state == "paused")
        b_tokens_after_a.append(sup.runners["b"].ledger.tokens_spent)
        b_state_after_a.append(sup.runners["b"].state)
        await sup.resume("b")

    rec = await run_recorded(config, exit_when_idle=False, during=during)
    assert b_tokens_after_a == [0]
    assert b_state_after_a == ["paused"]
    # The note queued before the pause reached the turn that ran after the resume.
    prompts = [s.prompt for s in rec.of(ev.IterationStarted, "b")]
    assert "Operator note: use the helper in utils.py" in prompts[-1]
    assert rec.result("b").tokens > 0


async def test_a_pause_during_a_turn_shows_pausing_until_the_turn_ends(tmp_path: Path) -> None:
    config = _two_loops_one_slot(tmp_path)

    async def during(rec: Recorded) -> None:
        sup = rec.supervisor
        await wait_for(lambda: sup.runners["a"].state == "running")
        await sup.pause("a")
        assert sup.runners["a"].state == "pausing"
        await wait_for(lambda: sup.runners["a"].state == "paused")
        await sup.stop()

    rec = await run_recorded(config, exit_when_idle=False, during=during)
    states = rec.states("a")
    assert states.index("pausing") < states.index("paused")
    # The turn in flight was finished (its tokens were already being spent), not thrown away.
    assert [f.outcome for f in rec.of(ev.IterationFinished, "a")] == ["continue"]


async def test_a_cancelled_pause_goes_back_to_running(tmp_path: Path) -> None:
    config = _two_loops_one_slot(tmp_path)

    async def during(rec: Recorded) -> None:
        sup = rec.supervisor
        await wait_for(lambda: sup.runners["a"].state == "running")
        await sup.pause("a")
        await sup.resume("a")
        assert sup.runners["a"].state == "running"
        await sup.stop()

    rec = await run_recorded(config, exit_when_idle=False, during=during)
    assert "paused" not in rec.states("a")
