"""The console rings the terminal bell on what a notification would say (a loop stuck,
failed, exhausted; budget warnings; the run's end), not on an operator's own pause,
and not for a loop whose `[notify] bell` is false."""

from __future__ import annotations

from pathlib import Path

import pytest
from console_support import endless_loop, sim_config, tui

from supervisor.alerts import Alert
from supervisor.api import RunSnapshot
from supervisor.cli.console import rings

pytestmark = pytest.mark.anyio


async def test_a_stuck_loop_rings_an_operator_pause_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = sim_config(
        tmp_path,
        endless_loop("busy", workspace="."),
        endless_loop("same", "stubborn", workspace=".", on_stuck="pause"),
    )
    async with tui(config) as run:
        bells: list[str] = []
        monkeypatch.setattr(run.app, "bell", lambda: bells.append(run.state("same")))
        await run.until(lambda: bells, what="the bell")
        assert bells == ["stuck"]
        await run.supervisor.pause("busy")
        await run.until(
            lambda: run.app.snapshot is not None and _state(run.app.snapshot, "busy") == "paused"
        )
        assert bells == ["stuck"]


def _state(snapshot: RunSnapshot | None, loop: str) -> str:
    """The loop's state as the console last saw it (its snapshot)."""
    if snapshot is None:
        return ""
    return next(s.state for s in snapshot.loops if s.name == loop)


def test_bell_follows_each_loops_notify_table(tmp_path: Path) -> None:
    config = sim_config(
        tmp_path,
        endless_loop("loud", workspace="."),
        endless_loop("quiet", workspace=".", notify={"bell": False}),
        endless_loop("picky", workspace=".", notify={"events": ["failed"]}),
    )
    assert rings(config, Alert(kind="attention", loop="loud"))
    assert not rings(config, Alert(kind="failed", loop="quiet"))
    assert rings(config, Alert(kind="failed", loop="picky"))
    assert not rings(config, Alert(kind="exhausted", loop="picky"))
    assert rings(config, Alert(kind="finished"))
