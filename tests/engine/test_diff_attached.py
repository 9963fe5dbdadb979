"""The `diff` op over a real `loopvisor serve`, and the console's `d` attached to it:
the whole diff and one iteration's come over the control socket, as git makes them."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from daemon import kill_daemon, start_daemon
from gitrepo import commits, git, make_repo
from loops_support import fixer_config

from supervisor.api import ControlError
from supervisor.cli.console import attach_options
from supervisor.config.load import load_config
from supervisor.control.client import RemoteSupervisor
from supervisor.gitexec import PATCH_OPTIONS
from supervisor.worktree import prepare_worktrees
from tui.app import LoopvisorApp
from tui.screens.diff import DiffScreen
from tui.screens.history import HistoryScreen
from tui.widgets.diffview import DiffView

pytestmark = pytest.mark.anyio


def worktree_toml() -> str:
    """`fix` writes a draft in iterations 1 and 2 (the same: 2 commits nothing) and the
    fix in 3; `plain` has no worktree."""
    return fixer_config()


async def test_diff_over_a_real_serve_and_in_an_attached_console(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (tmp_path / "ws").mkdir()
    (tmp_path / "loops.toml").write_text(worktree_toml())
    # `serve` runs the loops of existing worktrees; `run` is what creates them.
    prepare_worktrees(load_config(tmp_path / "loops.toml", state_dir=tmp_path / "state"))
    daemon = start_daemon(tmp_path, worktree_toml())
    try:
        async with RemoteSupervisor(daemon.socket, state_dir=daemon.state) as remote:
            want = ["continue", "continue", "succeeded"]
            with anyio.fail_after(30):  # the run, and the journal's commit of its end
                while [r.outcome for r in await remote.iterations("fix")] != want:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            made = commits(repo, "loopvisor/fix")
            rows = await remote.iterations("fix")
            assert [r.commit for r in rows] == [made[0]["sha"], None, made[1]["sha"]]

            whole = await remote.diff("fix")
            base = git("rev-parse", "main", cwd=repo).strip()
            assert (whole.base, whole.head) == (base, made[1]["sha"])
            assert whole.text == git("diff", *PATCH_OPTIONS, base, made[1]["sha"], cwd=repo)
            assert whole.stat == "2 files changed, 2 insertions(+), 1 deletion(-)"
            assert (whole.note, whole.truncated) == ("", False)

            third = await remote.diff("fix", iteration=3)
            assert (third.base, third.head) == (made[0]["sha"], made[1]["sha"])
            assert "-draft\n+fixed\n" in third.text
            second = await remote.diff("fix", iteration=2)
            assert (second.head, second.text) == (None, "")
            assert "made no checkpoint commit" in second.note
            with pytest.raises(ControlError, match="has no git worktree"):
                await remote.diff("plain")
            with pytest.raises(ControlError, match="no iteration 9"):
                await remote.diff("fix", iteration=9)
            with pytest.raises(ControlError, match="start at 1"):
                await remote.diff("fix", iteration=0)

            app = LoopvisorApp(remote, **attach_options(remote))
            async with app.run_test(size=(80, 24)) as pilot:
                with anyio.fail_after(10):
                    while app.snapshot is None or app.focused_loop is None:
                        await pilot.pause(0.05)
                app.focus_loop("fix")
                await pilot.press("d")
                with anyio.fail_after(10):
                    while not (isinstance(app.screen, DiffScreen) and app.screen.diff):
                        await pilot.pause(0.05)
                view = app.screen.query_one(DiffView)
                assert [text for text, _ in view.lines] == whole.text.rstrip("\n").split("\n")
                await pilot.press("escape")
                await pilot.press("h")
                with anyio.fail_after(10):
                    while not (isinstance(app.screen, HistoryScreen) and app.screen.rows):
                        await pilot.pause(0.05)
                assert [r.commit for r in app.screen.rows] == [r.commit for r in rows]
                await pilot.press("d")  # the selected row: the last iteration
                with anyio.fail_after(10):
                    while not (isinstance(app.screen, DiffScreen) and app.screen.diff):
                        await pilot.pause(0.05)
                assert app.screen.diff == third
                await pilot.press("escape", "escape", "q")
                await pilot.pause(0.2)
            assert app.return_code == 0
    finally:
        kill_daemon(daemon.pid)
