"""`loopvisor mcp`: loopvisor as an MCP server over stdio, for an agent (a Claude Code
session) to supervise the loops of a served supervisor.

It is one more client of the control socket: every tool call opens a
`RemoteSupervisor` on the socket, runs one or two ops and closes it. A connection per
call, not one for the server's life, because an MCP session idles for hours between
calls (the socket server may reclaim an idle slot), and because `loopvisor serve` may
start, stop or restart meanwhile: each call finds whoever serves now.

Tool results are plain text (JSON for the structured ones). A refusal of the
supervisor (unknown loop, invalid limit), nobody serving, a timeout: each comes back
as an MCP tool error carrying the message (`ToolError`), never a traceback.

The official `mcp` SDK (2.x, `MCPServer`) is an optional extra (`loopvisor[mcp]`),
imported here only, and this module only by `loopvisor mcp`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from supervisor.api import ControlError
from supervisor.control.client import RemoteSupervisor
from supervisor.control.protocol import NotServing
from supervisor.durations import parse_duration
from supervisor.lines import TranscriptLine

T = TypeVar("T")
LIMIT_KEYS = ("tokens", "usd", "wall", "cpu")
INSTRUCTIONS = (
    "Supervises the agent loops of a served loopvisor (loopvisor serve): list them, read "
    "their transcripts and history, pause, resume, stop, restart, inject a message into "
    "a loop's next prompt, change per-loop or global budget limits, start a new loop "
    "like an existing one, and fork a worktree loop from one of its iterations."
)


class Bridge:
    """The tools' one way to the supervisor: a call on a fresh connection, its
    failures as tool errors."""

    def __init__(self, socket: Path, state_dir: Path | None) -> None:
        self.socket = socket
        self.state_dir = state_dir

    async def call(self, fn: Callable[[RemoteSupervisor], Awaitable[T]]) -> T:
        try:
            async with RemoteSupervisor(self.socket, state_dir=self.state_dir) as remote:
                return await fn(remote)
        except (ControlError, NotServing, ValueError) as exc:
            raise ToolError(str(exc)) from None


def build_server(socket: Path, state_dir: Path | None) -> MCPServer[Any]:
    """The MCP server with loopvisor's tools, talking to the socket at `socket`."""
    bridge = Bridge(socket, state_dir)
    server: MCPServer[Any] = MCPServer("loopvisor", instructions=INSTRUCTIONS)

    @server.tool()
    async def list_loops() -> str:
        """Every loop of the run with its state, why, iteration, spend and limits, and
        the run's global budget, as JSON."""
        snap = await bridge.call(lambda r: r.snapshot(tail=0))
        data = snap.to_dict()
        for loop in data["loops"]:
            loop.pop("transcript_tail", None)
            loop.pop("transcript_streaming", None)
        return json.dumps(data, indent=1, default=str)

    @server.tool()
    async def transcript(loop: str, lines: int = 50) -> str:
        """The last `lines` lines (1 to 10,000) of a loop's transcript, one per line,
        each tagged with its kind ([text], [check-fail], ...)."""
        got = await bridge.call(lambda r: r.transcript(loop, limit=max(1, min(lines, 10_000))))
        return _lines(got) or f"{loop}: the transcript is empty"

    @server.tool()
    async def history(loop: str, iteration: int | None = None) -> str:
        """A loop's iterations (outcome, reason, tokens, USD, times) as JSON; with
        `iteration`, that iteration's prompt as sent, transcript and checks."""
        if iteration is None:
            rows = await bridge.call(lambda r: r.iterations(loop))
            return json.dumps([row.to_dict() for row in rows], indent=1)
        detail = await bridge.call(lambda r: r.iteration(loop, iteration))
        return json.dumps(detail.to_dict(), indent=1)

    @server.tool()
    async def pause(loop: str | None = None) -> str:
        """Pause a loop (or every loop when `loop` is omitted) at its next safe point."""
        await bridge.call(lambda r: r.pause(loop))
        return f"paused {loop or 'every loop'} (at its next safe point)"

    @server.tool()
    async def resume(loop: str | None = None) -> str:
        """Resume a paused or stuck loop (or every loop when `loop` is omitted)."""
        await bridge.call(lambda r: r.resume(loop))
        return f"resumed {loop or 'every loop'}"

    @server.tool()
    async def stop(loop: str | None = None, every_loop: bool = False) -> str:
        """Stop a loop now: its running turn is cancelled and its processes killed.
        Stopping every loop needs `every_loop` = true instead of a name."""
        if loop is None and not every_loop:
            raise ToolError("name a loop, or set every_loop to stop every loop")
        await bridge.call(lambda r: r.stop(loop))
        return f"stopped {loop or 'every loop'}"

    @server.tool()
    async def restart(loop: str) -> str:
        """Start a loop again from iteration 1 (spent budget stays spent)."""
        await bridge.call(lambda r: r.restart(loop))
        return f"restarted {loop}"

    @server.tool()
    async def inject(loop: str, text: str) -> str:
        """Add an operator message to a loop's next prompt."""
        await bridge.call(lambda r: r.inject(loop, text))
        return f"{loop}: message added to its next prompt"

    @server.tool()
    async def edit_limits(
        loop: str | None = None,
        tokens: int | None = None,
        usd: float | None = None,
        wall: str | None = None,
        cpu: str | None = None,
        max_iterations: int | None = None,
        unlimited: list[str] | None = None,
    ) -> str:
        """Change a loop's budget limits (or, with no `loop`, the run's global ones)
        from its next iteration. Omitted limits stay as they are; `wall` and `cpu`
        are durations such as "30m"; `unlimited` lists limits to remove ("tokens",
        "usd", "wall", "cpu"). `max_iterations` applies to a loop only."""
        changes = _limit_changes(tokens, usd, wall, cpu, unlimited or [])
        if not changes and max_iterations is None:
            raise ToolError("nothing to change: give tokens, usd, wall, cpu, or unlimited")
        if loop is None:
            if max_iterations is not None:
                raise ToolError("max_iterations is a loop's: name the loop")

            async def set_global(r: RemoteSupervisor) -> None:
                snap = await r.snapshot(tail=0)
                await r.budget(dataclasses.replace(snap.budget.limits, **changes))

            await bridge.call(set_global)
            return "global budget: " + _describe(changes)

        async def set_loop(r: RemoteSupervisor) -> None:
            limits = None
            if changes:
                snap = await r.snapshot(tail=0)
                current = next((x for x in snap.loops if x.name == loop), None)
                if current is None:
                    raise ToolError(f"no loop named {loop!r}")
                limits = dataclasses.replace(current.limits, **changes)
            await r.edit(loop, max_iterations=max_iterations, limits=limits)

        await bridge.call(set_loop)
        what = _describe(changes) if changes else ""
        if max_iterations is not None:
            what = ", ".join(filter(None, [what, f"max_iterations {max_iterations}"]))
        return f"{loop}: {what} (from its next iteration)"

    @server.tool()
    async def start_loop(
        name: str,
        like: str,
        prompt: str | None = None,
        max_iterations: int | None = None,
        tokens: int | None = None,
        usd: float | None = None,
        wall: str | None = None,
        cpu: str | None = None,
    ) -> str:
        """Start a new loop `name` made like the run's loop `like`: its agent, checks,
        workspace kind and budget settings (a worktree loop gets its own worktree and
        branch), with its own `prompt` template, `max_iterations` and limits (each
        omitted one is the like-loop's; `wall` and `cpu` are durations such as "30m").
        No new agent or command can be given: only loops.toml defines those."""
        changes = _limit_changes(tokens, usd, wall, cpu, [])

        async def add(r: RemoteSupervisor) -> str:
            limits = None
            if changes:
                snap = await r.snapshot(tail=0)
                current = next((x for x in snap.loops if x.name == like), None)
                if current is None:
                    raise ToolError(f"no loop named {like!r}")
                limits = dataclasses.replace(current.limits, **changes)
            return await r.add(
                name, like=like, prompt=prompt, max_iterations=max_iterations, limits=limits
            )

        return await bridge.call(add)

    @server.tool()
    async def fork(
        loop: str, iteration: int, name: str | None = None, prompt: str | None = None
    ) -> str:
        """Start a new loop from a worktree loop's iteration `iteration`: its own branch
        and worktree at that iteration's checkpoint commit, the conversation as the
        agent had it then, its own budget; `name` defaults to LOOP-forkN, `prompt` (a
        template) to the loop's."""
        return await bridge.call(
            lambda r: r.fork(loop, iteration=iteration, name=name, prompt=prompt)
        )

    return server


def _limit_changes(
    tokens: int | None, usd: float | None, wall: str | None, cpu: str | None, unlimited: list[str]
) -> dict[str, Any]:
    unknown = sorted(set(unlimited) - set(LIMIT_KEYS))
    if unknown:
        raise ToolError(f"unlimited: unknown limit {unknown[0]!r} (one of {', '.join(LIMIT_KEYS)})")
    changes: dict[str, Any] = {}
    for key, value in (("tokens", tokens), ("usd", usd)):
        if value is not None:
            changes[key] = value
    for key, text in (("wall", wall), ("cpu", cpu)):
        if text is not None:
            try:
                changes[key] = parse_duration(text)
            except ValueError as exc:
                raise ToolError(f"{key} {text!r}: {exc}") from None
    for key in unlimited:
        if key in changes:
            raise ToolError(f"{key}: give a value or list it in unlimited, not both")
        changes[key] = None
    return changes


def _describe(changes: dict[str, Any]) -> str:
    return ", ".join(f"{k} {'unlimited' if v is None else v}" for k, v in changes.items())


def _lines(lines: list[TranscriptLine]) -> str:
    return "\n".join(f"[{line.kind}] {line.text}" for line in lines)


def serve_stdio(socket: Path, state_dir: Path | None) -> None:
    """Run the MCP server on stdin/stdout until the client closes them."""
    build_server(socket, state_dir).run("stdio")
