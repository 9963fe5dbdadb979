"""History (`h`) of a finished loop: from the journal of a durable run, and from what
the console saw when there is no journal."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from console_support import sim_config, tui
from helpers import PY, loop, sim_agent

from supervisor.durable import durable_supervisor
from supervisor.lines import LineKind, texts
from supervisor.spec import Config
from tui.app import LoopvisorApp
from tui.screens.history import HistoryScreen
from tui.widgets.transcript import TranscriptView

pytestmark = pytest.mark.anyio


def converging(tmp_path: Path) -> Config:
    """`fizz` succeeds in iteration 2: its sim agent writes done.txt, which the check wants."""
    agent = sim_agent("conv", rate=200, reply_tokens=10, converge_after=2, files={"done.txt": "ok"})
    check = {
        "name": "done",
        "run": [PY, "-c", "import os, sys; sys.exit(not os.path.exists('done.txt'))"],
    }
    (tmp_path / "ws").mkdir()
    return sim_config(tmp_path, loop("fizz", "conv", checks=[check], workspace="ws"), conv=agent)


async def test_history_reads_the_journal_of_a_finished_loop(tmp_path: Path) -> None:
    config = converging(tmp_path)
    async with durable_supervisor(config, exit_when_idle=False) as sup:
        app = LoopvisorApp(sup, title="t", run_supervisor=sup.run)
        async with app.run_test(size=(100, 30)) as pilot:
            with anyio.fail_after(15):
                while sup.runners["fizz"].state != "succeeded":
                    await pilot.pause(0.05)
            await pilot.pause(0.3)  # the journal writer commits every 50 ms
            await pilot.press("h")
            with anyio.fail_after(10):
                while not (isinstance(app.screen, HistoryScreen) and app.screen.rows):
                    await pilot.pause(0.05)
            history = app.screen
            assert isinstance(history, HistoryScreen)
            assert history.source == "journal"
            assert [(r.iteration, r.outcome) for r in history.rows] == [
                (1, "continue"),
                (2, "succeeded"),
            ]
            detail = history.query_one(TranscriptView)
            with anyio.fail_after(5):
                while not any("Iteration 2 of" in line.text for line in detail.lines):
                    await pilot.pause(0.05)
            assert detail.lines[0] == (LineKind.PROMPT, "prompt:")
            await pilot.press("up")
            with anyio.fail_after(5):
                while not any("Iteration 1 of" in line.text for line in detail.lines):
                    await pilot.pause(0.05)
            await pilot.press("escape")
            await sup.shutdown()
            with anyio.fail_after(10):
                while not app.run_done:
                    await pilot.pause(0.05)


async def test_history_without_a_journal_shows_what_the_session_saw(tmp_path: Path) -> None:
    async with tui(converging(tmp_path), size=(100, 30)) as run:
        await run.until(lambda: run.state("fizz") == "succeeded")
        await run.pilot.press("h")
        await run.until(
            lambda: isinstance(run.app.screen, HistoryScreen) and bool(run.app.screen.rows)
        )
        history = run.app.screen
        assert isinstance(history, HistoryScreen)
        assert history.source.startswith("this session")
        assert [(r.iteration, r.outcome) for r in history.rows] == [
            (1, "continue"),
            (2, "succeeded"),
        ]
        detail = history.query_one(TranscriptView)
        await run.until(
            lambda: any(
                line.kind == LineKind.CHECK_PASS and "✔ check done" in line.text
                for line in detail.lines
            )
        )
        assert "Iteration 2 of" in "\n".join(texts(detail.lines))
