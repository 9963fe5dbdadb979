"""`loopvisor mcp`: the MCP SDK's own stdio client spawns `loopvisor mcp` against a real
`loopvisor serve` of sim loops, lists the tools, calls each, and sees the change in
`loopvisor status`; refusals come back as tool errors with the message."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from daemon import Daemon, kill_daemon, lv, poll, start_daemon
from gitrepo import make_repo
from helpers import PY, cli_env
from loops_support import fixer_config
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from supervisor.config.load import load_config
from supervisor.worktree import prepare_worktrees

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

TOOLS = {
    "list_loops",
    "transcript",
    "history",
    "pause",
    "resume",
    "stop",
    "restart",
    "inject",
    "edit_limits",
    "start_loop",
    "fork",
}


@asynccontextmanager
async def mcp_session(state: Path, cwd: Path) -> AsyncIterator[ClientSession]:
    """`loopvisor mcp --state-dir STATE` spawned by the SDK's stdio client."""
    params = StdioServerParameters(
        command=PY,
        args=["-m", "supervisor", "mcp", "--state-dir", str(state)],
        env=cli_env(),
        cwd=cwd,
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def call(session: ClientSession, tool: str, **args: Any) -> str:
    result = await session.call_tool(tool, args)
    text = "".join(getattr(c, "text", "") for c in result.content)
    assert not result.is_error, text
    return text


async def refused(session: ClientSession, tool: str, **args: Any) -> str:
    result = await session.call_tool(tool, args)
    assert result.is_error
    text = "".join(getattr(c, "text", "") for c in result.content)
    assert "Traceback" not in text
    return text


async def prompted(session: ClientSession, loop: str, text: str) -> bool:
    """Some iteration of `loop` was sent a prompt containing `text` (the history tool)."""
    rows = json.loads(await call(session, "history", loop=loop))
    for row in rows[-3:]:
        detail = await call(session, "history", loop=loop, iteration=row["iteration"])
        if text in json.loads(detail)["prompt"]:
            return True
    return False


def status(d: Daemon) -> dict[str, Any]:
    """`loopvisor status --json` on the served state dir (the journal's view)."""
    r = lv("status", "--json", "--state-dir", d.state, cwd=d.cwd)
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def state_of(d: Daemon, loop: str) -> str:
    return str(next(x for x in status(d)["loops"] if x["name"] == loop)["state"])


async def test_every_tool_drives_the_served_supervisor(daemon: Daemon) -> None:
    d = daemon
    async with mcp_session(d.state, d.cwd) as session:
        tools = await session.list_tools()
        assert {t.name for t in tools.tools} == TOOLS

        listed = json.loads(await call(session, "list_loops"))
        assert [x["name"] for x in listed["loops"]] == ["l0", "l1"]
        assert "transcript_tail" not in listed["loops"][0]

        assert "paused l0" in await call(session, "pause", loop="l0")
        poll(lambda: state_of(d, "l0") == "paused", what="l0 paused in status")
        await call(session, "resume", loop="l0")
        poll(lambda: state_of(d, "l0") != "paused", what="l0 resumed in status")

        await call(session, "inject", loop="l1", text="mind the edge cases")
        with anyio.fail_after(10):  # in a later iteration's prompt as sent
            while not await prompted(session, "l1", "Operator note: mind the edge cases"):  # noqa: ASYNC110 (state of another process)
                await anyio.sleep(0.1)

        await call(session, "edit_limits", loop="l1", tokens=123_456, wall="30m")
        limits = d.loop("l1")["limits"]  # `ctl status`: the journal's status has the config's
        assert (limits["tokens"], limits["wall"]) == (123_456, 1800.0)
        await call(session, "edit_limits", loop="l1", unlimited=["wall"])
        assert d.loop("l1")["limits"]["wall"] is None
        assert "global budget: usd 50" in await call(session, "edit_limits", usd=50)
        assert d.status()["budget"]["limits"]["usd"] == 50

        poll(lambda: d.loop("l0")["iteration"] >= 2, what="l0's second iteration")
        text = await call(session, "transcript", loop="l0", lines=20)
        assert text.count("\n") <= 19
        assert "[" in text
        rows = json.loads(await call(session, "history", loop="l0"))
        assert rows[0]["iteration"] == 1
        detail = json.loads(await call(session, "history", loop="l0", iteration=1))
        assert "Do the task" in detail["prompt"]

        await call(session, "stop", loop="l1")
        poll(lambda: state_of(d, "l1") == "stopped", what="l1 stopped in status")
        assert "restarted l1" in await call(session, "restart", loop="l1")
        poll(lambda: state_of(d, "l1") != "stopped", what="l1 running again")


async def test_refusals_are_tool_errors_with_the_message(daemon: Daemon, tmp_path: Path) -> None:
    async with mcp_session(daemon.state, daemon.cwd) as session:
        assert "no loop named 'nope'" in await refused(session, "pause", loop="nope")
        assert "every_loop" in await refused(session, "stop")
        assert "nothing to change" in await refused(session, "edit_limits", loop="l0")
        assert "wall 'soon'" in await refused(session, "edit_limits", loop="l0", wall="soon")
        assert "tokens" in await refused(session, "edit_limits", loop="l0", tokens=-5)
        assert "no loop named 'nope'" in await refused(session, "edit_limits", loop="nope", usd=1)
    assert state_of(daemon, "l0") != "stopped"
    async with mcp_session(tmp_path / "nobody", tmp_path) as session:
        assert "no loopvisor is serving" in await refused(session, "list_loops")


async def test_start_loop_adds_a_loop_like_another_and_refuses_clearly(daemon: Daemon) -> None:
    d = daemon
    async with mcp_session(d.state, d.cwd) as session:
        text = await call(
            session, "start_loop", name="l2", like="l0", max_iterations=1, tokens=40_000,
            prompt="One more, iteration $iteration.",
        )  # fmt: skip
        assert text == "l2: started like l0"
        poll(lambda: state_of(d, "l2") in ("failed", "succeeded", "exhausted"), 30, "l2 ended")
        listed = json.loads(await call(session, "list_loops"))
        l2 = next(x for x in listed["loops"] if x["name"] == "l2")
        assert (l2["iteration"], l2["max_iterations"], l2["limits"]["tokens"]) == (1, 1, 40_000)
        assert l2["agent"] == "slow"
        assert "no loop named 'nope'" in await refused(session, "start_loop", name="x", like="nope")
        assert "exists" in await refused(session, "start_loop", name="l1", like="l0")
        assert "must be positive" in await refused(
            session, "start_loop", name="y", like="l0", usd=-1.0
        )
        assert "wall 'soon'" in await refused(
            session, "start_loop", name="y", like="l0", wall="soon"
        )


@pytest.mark.timeout(150)
async def test_fork_tool_forks_a_served_worktree_loop(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    (tmp_path / "ws").mkdir()
    toml = fixer_config()
    (tmp_path / "loops.toml").write_text(toml)
    prepare_worktrees(load_config(tmp_path / "loops.toml", state_dir=tmp_path / "state"))
    d = start_daemon(tmp_path, toml)
    try:
        async with mcp_session(d.state, d.cwd) as session:
            poll(lambda: state_of(d, "fix") == "succeeded", 30, "fix to succeed")
            text = await call(session, "fork", loop="fix", iteration=2, name="again")
            assert text.startswith("again: forked from fix@2 at commit "), text
            poll(lambda: state_of(d, "again") == "succeeded", 30, "the fork to succeed")
            listed = json.loads(await call(session, "list_loops"))
            again = next(x for x in listed["loops"] if x["name"] == "again")
            assert again["forked_from"] == "fix@2"
            assert (d.state / "worktrees" / "again" / "app.py").read_text() == "fixed\n"
            assert "no worktree" in await refused(session, "fork", loop="plain", iteration=1)
            assert "is not a valid loop name" in await refused(
                session, "fork", loop="fix", iteration=1, name="bad name"
            )
    finally:
        kill_daemon(d.pid)
