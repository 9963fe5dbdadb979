"""`on_exhausted = "pause"`: a spent budget pauses (cause "budget", with the numbers)
and raising the limit goes on from where the loop stopped, for a loop's own budget
(`edit`) and the global one (`budget`); nobody raising it keeps the exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import (
    Recorded,
    load,
    loop,
    run_recorded,
    sim_agent,
    supervisor_table,
    table,
    wait_for,
)
from loops_support import NO_STUCK, PER_ITERATION, failing_loop

from supervisor import events as ev
from supervisor.config.load import ConfigError
from supervisor.runtime import EXIT_ATTENTION, EXIT_BUDGET
from supervisor.spec import Limits

pytestmark = pytest.mark.anyio


def budget_pause(rec: Recorded) -> ev.LoopStateChanged | None:
    return next((e for e in rec.of(ev.LoopStateChanged, "a") if e.cause == "budget"), None)


async def wait_budget_pause(rec: Recorded) -> ev.LoopStateChanged:

    await wait_for(
        lambda: budget_pause(rec) is not None and rec.supervisor.runners["a"].state == "paused"
    )
    found = budget_pause(rec)
    assert found is not None
    return found


def iterations(rec: Recorded) -> list[tuple[int, str]]:
    return [(f.iteration, f.outcome) for f in rec.of(ev.IterationFinished, "a")]


async def test_raising_a_loops_budget_goes_on_at_the_next_iteration(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("s"),
        failing_loop(on_exhausted="pause", budget={"tokens": 2 * PER_ITERATION}),
    )

    async def during(rec: Recorded) -> None:
        paused = await wait_budget_pause(rec)
        assert paused.state == "paused"
        assert paused.reason.startswith("budget: loop 'a' tokens budget used up (58 of 58 tokens")
        assert iterations(rec) == [(1, "continue"), (2, "continue")]
        await rec.supervisor.edit("a", limits=Limits(tokens=10 * PER_ITERATION))

    rec = await run_recorded(config, during=during, exit_when_idle=False)
    result = rec.result("a")
    assert result.state == "failed"  # max_iterations: it went on to 3 and 4
    assert iterations(rec) == [(i, "continue") for i in (1, 2, 3, 4)]
    assert [e.iteration for e in rec.of(ev.IterationStarted, "a")] == [1, 2, 3, 4]
    assert result.tokens == 4 * PER_ITERATION  # nothing charged twice


async def test_raising_the_global_budget_goes_on(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        table("supervisor", on_exhausted="pause"),
        table("supervisor.budget", tokens=2 * PER_ITERATION),
        sim_agent("s"),
        failing_loop(),
    )

    async def during(rec: Recorded) -> None:
        paused = await wait_budget_pause(rec)
        assert paused.reason.startswith("budget: global tokens budget used up (58 of 58 tokens")
        await rec.supervisor.budget(Limits(tokens=10 * PER_ITERATION))

    rec = await run_recorded(config, during=during, exit_when_idle=False)
    assert rec.result("a").state == "failed"
    assert [e.iteration for e in rec.of(ev.IterationStarted, "a")] == [1, 2, 3, 4]
    assert rec.summary is not None
    assert rec.summary.exit_code != EXIT_BUDGET
    [applied] = [e for e in rec.of(ev.ControlApplied) if e.op == "budget"]
    assert "290" in applied.detail


async def test_a_raise_that_is_not_enough_keeps_it_paused(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("s"),
        failing_loop(on_exhausted="pause", budget={"tokens": 2 * PER_ITERATION}),
    )

    async def during(rec: Recorded) -> None:
        await wait_budget_pause(rec)
        await rec.supervisor.edit("a", limits=Limits(tokens=2 * PER_ITERATION - 1))
        assert rec.supervisor.runners["a"].state == "paused"
        await rec.supervisor.stop("a")

    rec = await run_recorded(config, during=during, exit_when_idle=False)
    assert rec.result("a").state == "stopped"
    assert rec.result("a").iterations == 2


async def test_headless_with_nobody_to_raise_keeps_the_exit_codes(tmp_path: Path) -> None:
    loop_cfg = load(
        tmp_path,
        supervisor_table(),
        sim_agent("s"),
        failing_loop(on_exhausted="pause", budget={"tokens": PER_ITERATION}),
    )
    rec = await run_recorded(loop_cfg)
    assert rec.result("a").state == "paused"
    assert rec.summary is not None
    assert rec.summary.exit_code == EXIT_ATTENTION

    (tmp_path / "g").mkdir()
    global_cfg = load(
        tmp_path / "g",
        table("supervisor", on_exhausted="pause"),
        table("supervisor.budget", tokens=PER_ITERATION),
        sim_agent("s"),
        failing_loop(),
    )
    rec = await run_recorded(global_cfg)
    assert rec.result("a").state == "paused"
    assert rec.summary is not None
    assert rec.summary.exit_code == EXIT_BUDGET


def test_on_exhausted_is_checked_with_its_position(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, supervisor_table(), sim_agent("s"), failing_loop(on_exhausted="wait"))
    text = str(err.value)
    assert "loops.toml:" in text
    assert "on_exhausted" in text
    assert "wait" in text


def endless_loop() -> str:
    return loop("a", "s", done_marker="NEVER", max_iterations=100_000, stuck=NO_STUCK)


async def test_raising_the_global_wall_limit_moves_the_runs_deadline(tmp_path: Path) -> None:
    """`budget` changed the ledger's wall limit but the run still ended at the deadline
    fixed when it started: the operator was told one thing and the run did another."""
    config = load(
        tmp_path, table("supervisor.budget", wall="1s"), sim_agent("s", rate=400), endless_loop()
    )

    async def during(rec: Recorded) -> None:
        await rec.supervisor.budget(Limits(wall=600.0))
        await wait_for(lambda: rec.supervisor.wall_s > 1.5)
        assert rec.supervisor.runners["a"].state not in ("exhausted", "stopped")
        await rec.supervisor.stop("a")

    rec = await run_recorded(config, during=during, exit_when_idle=False)
    assert rec.result("a").state == "stopped"


async def test_lowering_the_global_wall_limit_ends_the_run_at_once(tmp_path: Path) -> None:
    config = load(
        tmp_path, table("supervisor.budget", wall="10m"), sim_agent("s", rate=400), endless_loop()
    )

    async def during(rec: Recorded) -> None:
        await wait_for(lambda: rec.of(ev.IterationFinished, "a"))
        await rec.supervisor.budget(Limits(wall=0.1))

    rec = await run_recorded(config, during=during, exit_when_idle=False)
    assert rec.result("a").state == "exhausted"
    assert "global wall budget (0.1s) used up" in rec.result("a").reason
