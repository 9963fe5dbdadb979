"""`f` on the console's history screen: the fork dialog (its name filled with the
default, a refusal shown in the dialog, enter forks, esc cancels), attached over the
control socket of a real `loopvisor serve`, against a real git repository."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from daemon import kill_daemon, start_daemon
from gitrepo import commits, git, make_repo
from loops_support import fixer_config
from textual.widgets import DataTable, Input, Static

from supervisor.cli.console import attach_options
from supervisor.config.load import load_config
from supervisor.control.client import RemoteSupervisor
from supervisor.worktree import prepare_worktrees
from tui.app import LoopvisorApp
from tui.screens.fork import ForkScreen
from tui.screens.history import HistoryScreen
from tui.screens.main import loop_title

pytestmark = pytest.mark.anyio


def toml() -> str:
    return fixer_config(converge_after=2, news=False, plain=False)


async def test_f_on_history_forks_the_selected_iteration(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (tmp_path / "loops.toml").write_text(toml())
    prepare_worktrees(load_config(tmp_path / "loops.toml", state_dir=tmp_path / "state"))
    daemon = start_daemon(tmp_path, toml())
    try:
        async with RemoteSupervisor(daemon.socket, state_dir=daemon.state) as remote:
            with anyio.fail_after(30):
                while [r.outcome for r in await remote.iterations("fix")] != [  # noqa: ASYNC110
                    "continue",
                    "succeeded",
                ]:
                    await anyio.sleep(0.05)
            first = commits(repo, "loopvisor/fix")[0]["sha"]
            app = LoopvisorApp(remote, **attach_options(remote))
            async with app.run_test(size=(80, 24)) as pilot:
                with anyio.fail_after(10):
                    while app.snapshot is None or app.focused_loop is None:
                        await pilot.pause(0.05)
                app.focus_loop("fix")
                await pilot.press("h")
                with anyio.fail_after(10):
                    while not (isinstance(app.screen, HistoryScreen) and app.screen.rows):
                        await pilot.pause(0.05)
                app.screen.query_one(DataTable).move_cursor(row=0)  # iteration 1
                await pilot.press("f")
                with anyio.fail_after(10):
                    while not isinstance(app.screen, ForkScreen):
                        await pilot.pause(0.05)
                dialog = app.screen
                name = dialog.query_one(Input)
                assert name.value == "fix-fork1"
                # esc cancels: nothing is forked.
                await pilot.press("escape")
                await pilot.pause(0.1)
                assert isinstance(app.screen, HistoryScreen)
                await pilot.press("f")
                with anyio.fail_after(10):
                    while not isinstance(app.screen, ForkScreen):
                        await pilot.pause(0.05)
                dialog = app.screen
                # A taken name is refused in the dialog, which stays open.
                dialog.query_one(Input).value = "fix"
                await pilot.press("enter")
                error = dialog.query_one("#error", Static)
                with anyio.fail_after(10):
                    while "exists in this run" not in str(error.render()):
                        await pilot.pause(0.05)
                assert app.screen is dialog
                dialog.query_one(Input).value = "retry"
                await pilot.press("enter")
                with anyio.fail_after(10):
                    while isinstance(app.screen, ForkScreen):
                        await pilot.pause(0.05)
                with anyio.fail_after(30):
                    while True:
                        snap = await remote.snapshot(tail=0)
                        fork = next((x for x in snap.loops if x.name == "retry"), None)
                        if fork is not None and fork.state == "succeeded":
                            break
                        await anyio.sleep(0.05)
                assert fork.forked_from == "fix@1"
                assert "retry (forked from fix@1)" in loop_title(fork)
                base = git("rev-parse", "refs/loopvisor/base/loopvisor/retry", cwd=repo)
                assert base.strip() == first
                await pilot.press("escape", "q")
                await pilot.pause(0.2)
    finally:
        kill_daemon(daemon.pid)
