"""`L` in the console: it asks (the one ConfirmScreen), then lands through the `land`
control op; here attached over the real control socket, against a real repo."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from helpers import sim_agent
from landrepo import checkout_picture, commit_all, make_repo

from supervisor.config.load import load_config
from supervisor.control.client import RemoteSupervisor
from supervisor.control.server import ControlServer
from supervisor.runtime import Supervisor
from supervisor.worktree import prepare_worktrees
from tui.app import LoopvisorApp
from tui.screens.confirm import ConfirmScreen

pytestmark = pytest.mark.anyio

LOOP = """
[[loop]]
name = "fix"
agent = "a"
prompt = "fix it"
workspace = { repo = "repo", worktree = true }
done_marker = "DONE"
"""


def notifications(app: LoopvisorApp) -> list[str]:
    return [n.message for n in app._notifications]


@pytest.mark.parametrize("conflict", [False, True])
async def test_L_asks_then_lands_through_the_control_op(tmp_path: Path, conflict: bool) -> None:
    repo = make_repo(tmp_path / "repo")
    cfg = tmp_path / "loops.toml"
    agent = sim_agent("a", rate=0, done_text="DONE", files={"app.py": "print('fixed')\n"})
    cfg.write_text(agent + LOOP)
    config = load_config(cfg)
    prepare_worktrees(config)
    if conflict:
        (repo / "app.py").write_text("print('main moved')\n")
        commit_all(repo, "main moved")
    before = checkout_picture(repo, but_loop_refs=True)
    sup = Supervisor(config, exit_when_idle=False)
    sock = tmp_path / "run" / "control.sock"
    server = ControlServer(sup, sock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sup.run)
        await tg.start(server.serve)
        async with RemoteSupervisor(sock) as remote:
            app = LoopvisorApp(remote, title="attached", detach_mode=True)
            async with app.run_test(size=(80, 24)) as pilot:
                main = app.main
                assert main is not None
                with anyio.fail_after(10):
                    while str(main.table.get_cell("fix", "state")) != "succeeded":
                        await pilot.pause(0.05)
                main.focus_loop("fix")
                await pilot.press("L")
                assert isinstance(app.screen, ConfirmScreen)
                await pilot.press("n")  # cancelled: nothing happens
                assert not isinstance(app.screen, ConfirmScreen)
                assert checkout_picture(repo, but_loop_refs=True) == before
                await pilot.press("L")
                await pilot.press("y")
                with anyio.fail_after(10):
                    while not any("fix:" in n for n in notifications(app)):
                        await pilot.pause(0.05)
                said: str
                (said,) = [n for n in notifications(app) if "fix:" in n]
                await pilot.press("ctrl+d")
        await sup.shutdown()
        tg.cancel_scope.cancel()
    await sup.aclose()
    if conflict:
        assert "conflicts in app.py" in said
        assert checkout_picture(repo, but_loop_refs=True) == before
    else:
        assert "merged loopvisor/fix into main" in said
        assert (repo / "app.py").read_text() == "print('fixed')\n"
