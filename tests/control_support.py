"""The control socket in-process, for the control area's tests and the security ones:
a real `Supervisor` of endless sim loops (`endless`) served by a real `ControlServer`
on a real Unix socket (`serving`), and a bare socket client that speaks or abuses the
protocol (`RawClient`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from helpers import load, loop, sim_agent, supervisor_table

from supervisor.control import protocol as proto
from supervisor.control.server import ControlServer
from supervisor.runtime import Supervisor
from supervisor.spec import Config


def endless(tmp_path: Path, *, rate: int = 200, reply_tokens: int = 20, loops: int = 2) -> Config:
    """Sim loops that never finish on their own (done marker never said, stuck ignored)."""
    parts = [supervisor_table(4), sim_agent("sim", rate=rate, reply_tokens=reply_tokens)]
    for i in range(loops):
        parts.append(
            loop(
                f"l{i}",
                "sim",
                max_iterations=100_000,
                done_marker="NEVER-SAID",
                on_stuck="continue",
            )
        )
    return load(tmp_path, *parts)


@asynccontextmanager
async def serving(
    config: Config, sock: Path, **server_kw: Any
) -> AsyncIterator[tuple[Supervisor, ControlServer]]:
    """A supervisor running with a control server on `sock`; both stopped on exit."""
    sup = Supervisor(config, exit_when_idle=False)
    server = ControlServer(sup, sock, **server_kw)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sup.run)
            await tg.start(server.serve)
            yield sup, server
            tg.cancel_scope.cancel()
    finally:
        await sup.aclose()


class RawClient:
    """A bare socket speaking (or abusing) the protocol."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.reader = proto.LineReader(stream, proto.MAX_SERVER_LINE)

    @classmethod
    @asynccontextmanager
    async def connect(cls, sock: Path) -> AsyncIterator[RawClient]:
        stream = await proto.connect(sock)
        async with stream:
            yield cls(stream)

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def message(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The next message that is not an event (None at EOF)."""
        with anyio.fail_after(timeout):
            while True:
                line = await self.reader.next()
                if line is None:
                    return None
                assert isinstance(line, bytes)
                msg: dict[str, Any] = json.loads(line)
                if "event" not in msg:
                    return msg
