"""The control socket: `ControlServer` serves a `SupervisorHandle` over a private Unix
socket, `RemoteSupervisor` implements `SupervisorHandle` over it (so the TUI, `ctl`
and `attach` use one code path for a local and a remote supervisor).

Safety properties (docs/protocol.md has the wire format):
- the socket is 0600 inside a 0700 directory owned by us, and every connection's
  peer uid (SO_PEERCRED) must be `allowed_uid` (default: ours);
- a request is answered or refused, never fatal: malformed lines get an error
  response; `MAX_GARBAGE` malformed lines in a row close that one connection;
- a subscriber reads from a bounded bus subscription (the bus coalesces what it
  misses into `EventsDropped`) and is disconnected when one write stays blocked for
  `stall_s` or it falls `max_dropped` events behind without catching up, so a slow
  client never slows a loop nor grows the server's memory;
- a slot is never held for nothing: a connection that sends no valid request within
  `handshake_s` is dropped; when every slot is taken a new connection takes the slot
  of the longest-idle one (no request in flight, not subscribed), and subscriptions
  may take at most `max_clients - RESERVED_SLOTS` slots, so neither idle sockets nor
  a flood of subscribers can lock the operator's `ctl` out.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream

from supervisor.api import ControlError, SupervisorHandle
from supervisor.control import protocol as proto
from supervisor.control.protocol import SUBSCRIPTION_BUFFER, RemoteError
from supervisor.events import Event, EventsDropped
from supervisor.spec import Limits
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
MAX_INFLIGHT = 8
MAX_SUBSCRIPTION_BUFFER = 20_000
_BATCH = 512


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
        self._clients: set[_Client] = set()
        self._forwarders = 0
        self._forwarders_done = anyio.Event()
        self._stats = {"accepted": 0, "refused": 0, "malformed": 0, "slow": 0, "idle": 0}

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
                self._stats["refused"] += 1
                log.warning("refused a connection: %s", refusal[0])
                with anyio.move_on_after(1), contextlib.suppress(Exception):
                    await stream.send(proto.error(None, *refusal))
                return
            self._stats["accepted"] += 1
            client = _Client(self, stream)
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
        self._stats["idle"] += 1
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

    async def execute(self, client: _Client, req: proto.Request) -> Any:
        """Run one validated request; returns its JSON result (or `_SENT`)."""
        h, a, op = self.handle, req.args, req.op
        if op == "snapshot":
            tail = req.args.get("tail")
            snap = await h.snapshot(tail=200 if tail is None else max(0, tail))
            return snap.to_dict(kinds=True)
        if op in ("pause", "resume", "stop"):
            await getattr(h, op)(a.get("loop"))
            return None
        if op in ("restart", "hand_back"):
            await getattr(h, op)(a["loop"])
            return None
        if op == "inject":
            await h.inject(a["loop"], a["text"])
            return None
        if op == "chat":
            return await h.chat(a["loop"], a["text"])
        if op == "step_in":
            return (await h.step_in(a["loop"])).to_dict()
        if op == "edit":
            raw = a.get("limits")
            await h.edit(
                a["loop"],
                prompt=a.get("prompt"),
                max_iterations=a.get("max_iterations"),
                limits=Limits(**raw) if raw is not None else None,
            )
            return None
        if op == "transcript":
            limit = min(10_000, max(1, a.get("limit") or 500))
            lines = await h.transcript(a["loop"], before=a.get("before"), limit=limit)
            return [line.text for line in lines]
        if op == "reload":
            if self.reload is None:
                raise RemoteError("this server cannot reload its config")
            return await self.reload()
        if op == "shutdown":
            if self.shutdown is None:
                raise RemoteError("this server cannot be shut down over the socket")
            self.shutdown()
            return None
        if op == "subscribe":
            await client.subscribe(req)
            return _SENT
        if op == "unsubscribe":
            client.unsubscribe()
            return None
        raise RemoteError(f"unknown op {op!r}", "protocol")  # pragma: no cover


_SENT = object()
"""`execute` result of an op that wrote its own response (subscribe)."""


class _Client:
    """One connection: a reader, a request task per request, an optional forwarder."""

    def __init__(self, server: ControlServer, stream: anyio.abc.SocketStream) -> None:
        self.server = server
        self.stream = stream
        self._write_lock = anyio.Lock()
        self._inflight = anyio.Semaphore(MAX_INFLIGHT)
        self._scope = anyio.CancelScope()
        self._forwarder: anyio.CancelScope | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._running = 0
        self._farewell: bytes | None = None
        self.greeted = False
        """True once a valid request arrived (the handshake is complete)."""
        self.last_active = anyio.current_time()

    @property
    def idle(self) -> bool:
        """Neither a request in flight nor a subscription: safe to drop when full."""
        return not self._running and self._forwarder is None

    def close(self, why: str, *, farewell: proto.ErrorKind | None = None) -> None:
        """Close the connection; with `farewell`, first tell the peer `why` (error line)."""
        log.info("closing a control connection: %s", why)
        if farewell is not None and self._farewell is None:
            self._farewell = proto.error(None, why, farewell)
        self._scope.cancel()

    async def send(self, data: bytes) -> bool:
        """Write one or more lines; a write blocked for `stall_s` closes the connection."""
        try:
            with anyio.fail_after(self.server.stall_s):
                async with self._write_lock:
                    await self.stream.send(data)
        except TimeoutError:
            self.server._stats["slow"] += 1
            self.close(f"a write stayed blocked for {self.server.stall_s:g}s")
            return False
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            self.close("peer went away")
            return False
        return True

    async def run(self) -> None:
        with self._scope:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if not await self.send(self.server.hello()):
                    return
                async with anyio.create_task_group() as requests:
                    await self._read(requests)
                    self.unsubscribe()  # EOF: finish the requests in flight, no more events
                tg.cancel_scope.cancel()
        if self._farewell is not None:  # the peer may not read: a short, bounded try
            with anyio.move_on_after(1), contextlib.suppress(Exception):
                await self.stream.send(self._farewell)

    async def _read(self, requests: anyio.abc.TaskGroup) -> None:
        handshake = anyio.CancelScope(deadline=anyio.current_time() + self.server.handshake_s)
        with handshake:
            await self._read_requests(requests, handshake)
        if handshake.cancelled_caught:
            self.server._stats["idle"] += 1
            self.close(f"no request within {self.server.handshake_s:g}s", farewell="busy")

    async def _read_requests(
        self, requests: anyio.abc.TaskGroup, handshake: anyio.CancelScope
    ) -> None:
        """Read and dispatch requests until EOF; the first valid one lifts `handshake`."""
        reader = proto.LineReader(self.stream, proto.MAX_REQUEST_LINE)
        garbage = 0
        while (item := await reader.next()) is not None:
            if isinstance(item, proto.Oversized):
                problem: proto.ProtocolError | None = proto.ProtocolError(
                    f"line too long (over {proto.MAX_REQUEST_LINE} bytes): skipped"
                )
            elif not item.strip():
                continue
            else:
                try:
                    req = proto.parse_request(item)
                    problem = None
                except proto.ProtocolError as exc:
                    problem = exc
            if problem is not None:
                garbage += 1
                self.server._stats["malformed"] += 1
                if not await self.send(proto.error(problem.request_id, str(problem), "protocol")):
                    return
                if garbage >= self.server.max_garbage:
                    msg = f"{garbage} malformed lines in a row: closing the connection"
                    await self.send(proto.error(None, msg, "protocol"))
                    self.close(msg)
                    return
                continue
            garbage = 0
            if not self.greeted:
                self.greeted = True
                handshake.deadline = math.inf
            await self._inflight.acquire()
            self._running += 1
            self.last_active = anyio.current_time()
            requests.start_soon(self._dispatch, req)

    async def _dispatch(self, req: proto.Request) -> None:
        try:
            try:
                result = await self.server.execute(self, req)
            except RemoteError as exc:
                line = proto.error(req.id, str(exc), exc.kind)
            except ControlError as exc:
                line = proto.error(req.id, str(exc), "control")
            except Exception as exc:
                log.exception("control op %s failed", req.op)
                line = proto.error(
                    req.id, f"internal error: {type(exc).__name__}: {exc}", "internal"
                )
            else:
                if result is _SENT:
                    return
                line = proto.ok(req.id, result)
            await self.send(line)
        finally:
            self._running -= 1
            self.last_active = anyio.current_time()
            self._inflight.release()

    # -- subscription -----------------------------------------------------------
    async def subscribe(self, req: proto.Request) -> None:
        if self._forwarder is not None:
            raise RemoteError("already subscribed")
        subscribed = sum(c._forwarder is not None for c in self.server._clients)
        if subscribed >= self.server.max_subscribers:
            raise RemoteError(
                f"too many subscribers ({self.server.max_subscribers}); the other"
                f" {self.server.max_clients - self.server.max_subscribers} slots are kept"
                " for requests"
            )
        assert self._tg is not None
        size = min(
            MAX_SUBSCRIPTION_BUFFER, max(1, req.args.get("max_buffer") or SUBSCRIPTION_BUFFER)
        )
        self._forwarder = anyio.CancelScope()
        await self._tg.start(
            self._forward, self._forwarder, size, bool(req.args.get("snapshot")), req.id
        )

    def unsubscribe(self) -> None:
        if self._forwarder is not None:
            self._forwarder.cancel()
            self._forwarder = None

    async def _forward(
        self,
        scope: anyio.CancelScope,
        size: int,
        with_snapshot: bool,
        rid: proto.RequestId,
        *,
        task_status: anyio.abc.TaskStatus[None],
    ) -> None:
        server = self.server
        server._forwarders += 1
        try:
            with scope:
                async with server.handle.subscribe(size) as events:
                    result: dict[str, Any] = {"subscribed": True, "max_buffer": size}
                    if with_snapshot:  # taken with the subscription open: nothing falls between
                        result["snapshot"] = (await server.handle.snapshot()).to_dict(kinds=True)
                    sent = await self.send(proto.ok(rid, result))
                    task_status.started()
                    if sent:
                        await self._pump(events)
        finally:
            if self._forwarder is scope:
                self._forwarder = None
            server._forwarders -= 1
            if not server._forwarders:
                server._forwarders_done.set()
                server._forwarders_done = anyio.Event()

    async def _pump(self, events: AsyncIterator[Event]) -> None:
        behind = 0
        batchable = isinstance(events, MemoryObjectReceiveStream)
        async for first in events:
            batch = [first]
            if isinstance(events, MemoryObjectReceiveStream):
                while len(batch) < _BATCH:
                    try:
                        batch.append(events.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
            behind += sum(e.count for e in batch if isinstance(e, EventsDropped))
            if behind > self.server.max_dropped:
                self.server._stats["slow"] += 1
                self.close(f"subscriber fell {behind} events behind")
                return
            if batchable and events.statistics().current_buffer_used == 0:  # type: ignore[attr-defined]
                behind = 0  # caught up
            if not await self.send(b"".join(proto.event_line(e.to_dict()) for e in batch)):
                return
