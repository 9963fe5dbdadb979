"""The control socket: `ControlServer` serves a `SupervisorHandle` over a private Unix
socket, `RemoteSupervisor` implements `SupervisorHandle` over it (so the TUI, `ctl`
and `attach` use one code path for a local and a remote supervisor).

This module listens and hands out client slots; `control.connection` serves one
connection (requests dispatched through `control.ops`, event forwarding).
Safety properties (docs/protocol.md has the wire format):
- the socket is 0600 inside a 0700 directory owned by us, and every connection's
  peer uid (SO_PEERCRED) must be `allowed_uid` (default: ours);
- a slow client never slows a loop nor grows the server's memory (`connection`);
- a slot is never held for nothing: a connection that sends no valid request within
  `handshake_s` is dropped; when every slot is taken a new connection takes the slot
  of the longest-idle one (no request in flight, not subscribed), and subscriptions
  may take at most `max_clients - RESERVED_SLOTS` slots, so neither idle sockets nor
  a flood of subscribers can lock the operator's `ctl` out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.abc

from supervisor.api import SupervisorHandle
from supervisor.control import protocol as proto
from supervisor.control.connection import Connection
from supervisor.sizes import DETAIL_WIRE_MAX_BYTES
from supervisor.statedir import StateDirError, ensure_state_dir

__all__ = ["ControlServer", "ControlSocketError", "ensure_private_dir"]

log = logging.getLogger("loopvisor.control")

STALL_S = 10.0
MAX_DROPPED = 10_000
MAX_GARBAGE = 100
MAX_CLIENTS = 64
RESERVED_SLOTS = 4
"""Client slots a subscription may never take: kept for request-only clients (`ctl`)."""
HANDSHAKE_S = 5.0
"""A connection that sent no valid request this long after connecting is dropped."""
Stat = Literal["accepted", "refused", "malformed", "slow", "idle"]


class ControlSocketError(Exception):
    """The socket cannot be created (in use by a live server, unsafe directory, ...)."""


def ensure_private_dir(path: Path) -> None:
    """The socket's directory is a state dir: statedir.ensure_state_dir's rules apply."""
    try:
        ensure_state_dir(path)
    except StateDirError as exc:
        raise ControlSocketError(str(exc)) from None


def _bind(path: Path) -> tuple[socket.socket, int]:
    """A listening 0600 socket at `path` (replacing a stale one); returns it and its inode."""
    ensure_private_dir(path.parent)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ControlSocketError(f"{path} exists and is not a socket: refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with proto.unix_address(path) as addr:
                probe.connect(addr)
        except OSError:
            path.unlink()  # stale: nobody listens
        else:
            raise ControlSocketError(f"a loopvisor is already serving on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.fchmod(sock.fileno(), 0o600)  # Linux: bind() creates the file with this mode
        with proto.unix_address(path) as addr:
            sock.bind(addr)
        os.chmod(path, 0o600)  # elsewhere; the dir is ours and 0700, so no link is here
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock, path.stat().st_ino


@dataclass(frozen=True, slots=True)
class ControlStatistics:
    clients: int
    accepted: int
    refused: int
    malformed: int
    slow_disconnects: int
    idle_disconnects: int = 0


class ControlServer:
    """Serves `handle` on `path`; run `await tg.start(server.serve)`.

    `reload` and `shutdown` are the serve command's hooks for those ops (absent: the
    op is refused). `info` adds run information to the hello line.
    """

    def __init__(
        self,
        handle: SupervisorHandle,
        path: Path,
        *,
        allowed_uid: int | None = None,
        info: Callable[[], Mapping[str, Any]] | None = None,
        reload: Callable[[], Awaitable[Any]] | None = None,
        shutdown: Callable[[], None] | None = None,
        stall_s: float = STALL_S,
        max_dropped: int = MAX_DROPPED,
        max_garbage: int = MAX_GARBAGE,
        max_clients: int = MAX_CLIENTS,
        handshake_s: float = HANDSHAKE_S,
        reserved_slots: int = RESERVED_SLOTS,
        detail_max: int = DETAIL_WIRE_MAX_BYTES,
    ) -> None:
        self.handle = handle
        self.path = Path(path)
        self.allowed_uid = os.getuid() if allowed_uid is None else allowed_uid
        self.info = info
        self.reload = reload
        self.shutdown = shutdown
        self.stall_s = stall_s
        self.max_dropped = max_dropped
        self.max_garbage = max_garbage
        self.max_clients = max_clients
        self.handshake_s = handshake_s
        self.max_subscribers = max(1, max_clients - reserved_slots)
        self.detail_max = detail_max
        """Wire bytes an `iteration` response may take (`control.bounds`)."""
        self._clients: set[Connection] = set()
        self._forwarders = 0
        self._forwarders_done = anyio.Event()
        self._stats: dict[Stat, int] = {
            "accepted": 0, "refused": 0, "malformed": 0, "slow": 0, "idle": 0
        }  # fmt: skip

    def count(self, stat: Stat) -> None:
        self._stats[stat] += 1

    def subscriber_count(self) -> int:
        return sum(c.forwarder is not None for c in self._clients)

    @contextlib.contextmanager
    def forwarding(self) -> Iterator[None]:
        """Held by each connection while it forwards events (`wait_subscribers_done`)."""
        self._forwarders += 1
        try:
            yield
        finally:
            self._forwarders -= 1
            if not self._forwarders:
                self._forwarders_done.set()
                self._forwarders_done = anyio.Event()

    def statistics(self) -> ControlStatistics:
        s = self._stats
        return ControlStatistics(
            len(self._clients), s["accepted"], s["refused"], s["malformed"], s["slow"], s["idle"]
        )

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen until cancelled; the socket file is removed on the way out."""
        sock, inode = await anyio.to_thread.run_sync(_bind, self.path)
        try:
            async with anyio.create_task_group() as tg:
                task_status.started()
                while True:
                    await anyio.wait_readable(sock)
                    try:
                        conn, _ = sock.accept()
                    except BlockingIOError:
                        continue
                    except OSError as exc:  # EMFILE and friends: back off, keep serving
                        log.warning("accept failed: %s", exc)
                        await anyio.sleep(0.1)
                        continue
                    tg.start_soon(self._serve_client, conn)
        finally:
            sock.close()
            with contextlib.suppress(OSError):
                if self.path.stat().st_ino == inode:
                    self.path.unlink()

    async def wait_subscribers_done(self) -> None:
        """Return once no subscription is forwarding (after the bus was closed)."""
        while self._forwarders:
            await self._forwarders_done.wait()

    async def _serve_client(self, conn: socket.socket) -> None:
        try:
            uid = proto.peer_uid(conn)
            conn.setblocking(False)
            # Transport-based stream: see protocol.connect for why not UNIXSocketStream.
            stream = await anyio.abc.SocketStream.from_socket(conn)
        except OSError as exc:
            conn.close()
            log.warning("could not set up a control connection: %s", exc)
            return
        async with stream:
            refusal: tuple[str, proto.ErrorKind] | None = None
            if uid != self.allowed_uid:
                refusal = f"permission denied: uid {uid} may not use this socket", "permission"
            elif len(self._clients) >= self.max_clients and not self._make_room():
                refusal = f"too many clients ({self.max_clients}, all busy)", "busy"
            if refusal is not None:
                self.count("refused")
                log.warning("refused a connection: %s", refusal[0])
                with anyio.move_on_after(1), contextlib.suppress(Exception):
                    await stream.send(proto.error(None, *refusal))
                return
            self.count("accepted")
            client = Connection(self, stream)
            self._clients.add(client)
            try:
                await client.run()
            except Exception:  # never let one client take the server down
                log.exception("control client failed")
            finally:
                self._clients.discard(client)

    def _make_room(self) -> bool:
        """Drop the longest-idle client (never-greeted first) to free a slot for a new one.

        Idle means no request in flight and no subscription: dropping it loses nothing
        (a well-behaved client reconnects when it next needs the server), while keeping
        it would let any local process that opens sockets lock everyone out.
        """
        idle = [c for c in self._clients if c.idle]
        if not idle:
            return False
        victim = min(idle, key=lambda c: (c.greeted, c.last_active))
        self._clients.discard(victim)
        victim.close(
            "the server is full and this connection was the longest idle: closing it",
            farewell="busy",
        )
        self.count("idle")
        return True

    def hello(self) -> bytes:
        info = dict(self.info()) if self.info is not None else {}
        return proto.encode(
            {
                "v": proto.VERSION,
                "hello": "loopvisor",
                "pid": os.getpid(),
                "ops": list(proto.OPS),
                "max_line": proto.MAX_REQUEST_LINE,
                **info,
            }
        )
