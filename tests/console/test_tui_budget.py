"""Raising budgets from the console: `b` opens the global budget dialog (the `budget`
op, as `ctl budget`), and a loop paused by the global budget goes on; the edit screen
raising a loop's own budget continues a loop that budget paused, at the next
iteration (`on_exhausted = "pause"`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from console_support import TuiRun, tui
from helpers import load, sim_agent, supervisor_table, table
from loops_support import PER_ITERATION, failing_loop
from textual.widgets import Input

from supervisor import events as ev
from supervisor.spec import Limits
from tui.screens.budget import BudgetScreen, read_limits
from tui.screens.edit import EditScreen

pytestmark = pytest.mark.anyio


def budget_paused(run: TuiRun) -> bool:
    return run.state("a") == "paused" and any(
        e.cause == "budget" for e in run.of(ev.LoopStateChanged, "a")
    )


def started(run: TuiRun, op: str = "") -> list[int]:
    """The iterations of loop a started (after the control op `op` was applied)."""
    at = next((i for i, e in enumerate(run.events) if getattr(e, "op", None) == op), 0)
    return [
        e.iteration for e in run.events[at:] if isinstance(e, ev.IterationStarted) and e.loop == "a"
    ]


async def test_b_raises_the_global_budget_and_the_paused_loop_goes_on(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        table("supervisor", on_exhausted="pause"),
        table("supervisor.budget", tokens=2 * PER_ITERATION),
        sim_agent("s"),
        failing_loop(),
    )
    async with tui(config, size=(100, 30)) as run:
        await run.until(lambda: budget_paused(run))
        await run.pilot.press("b")
        await run.until(lambda: isinstance(run.app.screen, BudgetScreen))
        screen = run.app.screen
        tokens = screen.query_one("#tokens", Input)
        assert tokens.value == str(2 * PER_ITERATION)
        tokens.value = "lots"
        await run.until(lambda: "tokens: expected" in str(screen.query_one("#errors").render()))
        await run.pilot.press("ctrl+s")
        assert isinstance(run.app.screen, BudgetScreen)  # refused inline, nothing applied
        assert not [e for e in run.of(ev.ControlApplied) if e.op == "budget"]
        tokens.value = str(10 * PER_ITERATION)
        await run.pilot.pause()
        await run.pilot.press("ctrl+s")
        await run.until(lambda: not isinstance(run.app.screen, BudgetScreen))
        await run.until(lambda: bool(started(run, "budget")))
        assert started(run, "budget")[0] == 3  # from where it stopped, not from iteration 1
        assert run.supervisor.ledger.limits.tokens == 10 * PER_ITERATION


async def test_the_edit_screen_raising_its_budget_continues_a_budget_paused_loop(
    tmp_path: Path,
) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("s"),
        failing_loop(on_exhausted="pause", budget={"tokens": 2 * PER_ITERATION}),
    )
    async with tui(config, size=(100, 30)) as run:
        await run.until(lambda: budget_paused(run))
        await run.focus("a")
        await run.pilot.press("e")
        await run.until(lambda: isinstance(run.app.screen, EditScreen))
        run.app.screen.query_one("#tokens", Input).value = str(10 * PER_ITERATION)
        await run.pilot.pause()
        await run.pilot.press("ctrl+s")
        await run.until(lambda: not isinstance(run.app.screen, EditScreen))
        await run.until(lambda: bool(started(run, "edit")))
        assert started(run, "edit")[0] == 3


def test_read_limits_keeps_wall_and_cpu() -> None:
    current = Limits(tokens=5, usd=1.0, wall=60.0, cpu=30.0)
    assert read_limits(current, "1_000", "") == (
        [],
        Limits(tokens=1000, usd=None, wall=60.0, cpu=30.0),
    )
    problems, limits = read_limits(current, "x", "y")
    assert limits is None
    assert len(problems) == 2
