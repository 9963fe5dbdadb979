"""History (`h`) in a console attached to a real `loopvisor serve` process: the
iterations and their detail come over the control socket (`iterations`, `iteration`),
not from the journal's file (the attached app is given no state dir)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from daemon import kill_daemon, start_daemon
from helpers import PY, loop, sim_agent, supervisor_table

from supervisor.cli.console import attach_options
from supervisor.control.client import RemoteSupervisor
from tui.app import LoopvisorApp
from tui.screens.history import HistoryScreen
from tui.widgets.transcript import TranscriptView

pytestmark = pytest.mark.anyio


def converging_toml() -> str:
    """`fizz` succeeds in iteration 2: its sim agent writes done.txt, the check wants it."""
    check = {
        "name": "done",
        "run": [PY, "-c", "import os, sys; sys.exit(not os.path.exists('done.txt'))"],
    }
    return "\n".join(
        [
            supervisor_table(2),
            sim_agent("conv", rate=200, reply_tokens=10, converge_after=2, files={"done.txt": "x"}),
            loop("fizz", "conv", checks=[check], workspace="ws"),
        ]
    )


async def test_history_in_an_attached_console_comes_over_the_socket(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    daemon = start_daemon(tmp_path, converging_toml())
    try:
        async with RemoteSupervisor(daemon.socket, state_dir=daemon.state) as remote:
            options = attach_options(remote)
            assert "state_dir" not in options
            want = ["continue", "succeeded"]
            with anyio.fail_after(20):  # the run, and the journal's commit of its end
                while [r.outcome for r in await remote.iterations("fizz")] != want:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            app = LoopvisorApp(remote, **options)
            async with app.run_test(size=(100, 30)) as pilot:
                with anyio.fail_after(10):
                    while app.snapshot is None:
                        await pilot.pause(0.05)
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
                with anyio.fail_after(10):
                    while not any("Iteration 2 of" in line.text for line in detail.lines):
                        await pilot.pause(0.05)
                assert detail.lines[0].text == "prompt:"
                assert any("check done" in line.text for line in detail.lines)
                await pilot.press("up")
                with anyio.fail_after(10):
                    while not any("Iteration 1 of" in line.text for line in detail.lines):
                        await pilot.pause(0.05)
                await pilot.press("escape")
                await pilot.press("q")
                await pilot.pause(0.2)
            assert app.return_code == 0
    finally:
        kill_daemon(daemon.pid)
