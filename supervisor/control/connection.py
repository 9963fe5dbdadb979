"""One control connection: read requests, run each through its op's definition, forward
events to a subscriber, and never let one peer hurt the server or the loops.

- a request is answered or refused, never fatal: a malformed line gets a `protocol`
  error; `max_garbage` of them in a row close this connection only;
- requests run concurrently (at most `MAX_INFLIGHT` at once), each dispatched by
  name through `ops.BY_NAME`, so a new op needs no code here;
- a subscriber reads from a bounded bus subscription (the bus coalesces what it
  misses into `EventsDropped`) and is disconnected when one write stays blocked for
  `stall_s` or it falls `max_dropped` events behind without catching up.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream

from supervisor.api import ControlError, SupervisorHandle
from supervisor.control import ops
from supervisor.control import protocol as proto
from supervisor.control.opdef import SENT
from supervisor.control.protocol import RemoteError
from supervisor.events import Event, EventsDropped

if TYPE_CHECKING:
    from supervisor.control.server import ControlServer

log = logging.getLogger("loopvisor.control")

MAX_INFLIGHT = 8
_BATCH = 512


class Connection:
    """One connection: a reader, a task per request, an optional event forwarder."""

    def __init__(self, server: ControlServer, stream: anyio.abc.SocketStream) -> None:
        self.server = server
        self.stream = stream
        self._write_lock = anyio.Lock()
        self._inflight = anyio.Semaphore(MAX_INFLIGHT)
        self._scope = anyio.CancelScope()
        self.forwarder: anyio.CancelScope | None = None
        """Set while this connection is subscribed."""
        self._tg: anyio.abc.TaskGroup | None = None
        self._running = 0
        self._farewell: bytes | None = None
        self.greeted = False
        """True once a valid request arrived (the handshake is complete)."""
        self.last_active = anyio.current_time()

    @property
    def idle(self) -> bool:
        """Neither a request in flight nor a subscription: safe to drop when full."""
        return not self._running and self.forwarder is None

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
            self.server.count("slow")
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
            self.server.count("idle")
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
                self.server.count("malformed")
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
        op = ops.BY_NAME[req.op]  # parse_request let only known ops through
        try:
            try:
                result = await op.run(_Session(self, req.id), op.decode(req.args))
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
                if result is SENT:
                    return
                line = proto.ok(req.id, result)
            await self.send(line)
        finally:
            self._running -= 1
            self.last_active = anyio.current_time()
            self._inflight.release()

    # -- subscription -----------------------------------------------------------
    async def subscribe(self, rid: proto.RequestId, size: int, with_snapshot: bool) -> None:
        if self.forwarder is not None:
            raise RemoteError("already subscribed")
        server = self.server
        if server.subscriber_count() >= server.max_subscribers:
            raise RemoteError(
                f"too many subscribers ({server.max_subscribers}); the other"
                f" {server.max_clients - server.max_subscribers} slots are kept"
                " for requests"
            )
        assert self._tg is not None
        self.forwarder = anyio.CancelScope()
        await self._tg.start(self._forward, self.forwarder, size, with_snapshot, rid)

    def unsubscribe(self) -> None:
        if self.forwarder is not None:
            self.forwarder.cancel()
            self.forwarder = None

    async def _forward(
        self,
        scope: anyio.CancelScope,
        size: int,
        with_snapshot: bool,
        rid: proto.RequestId,
        *,
        task_status: anyio.abc.TaskStatus[None],
    ) -> None:
        handle = self.server.handle
        try:
            with self.server.forwarding(), scope:
                result: dict[str, Any] = {"subscribed": True, "max_buffer": size}
                if with_snapshot:  # one instant: nothing falls between it and the events
                    async with handle.subscribe_with_snapshot(size) as (snapshot, events):
                        result["snapshot"] = snapshot.to_dict(kinds=True)
                        await self._respond_then_pump(rid, result, events, task_status)
                else:
                    async with handle.subscribe(size) as events:
                        await self._respond_then_pump(rid, result, events, task_status)
        finally:
            if self.forwarder is scope:
                self.forwarder = None

    async def _respond_then_pump(
        self,
        rid: proto.RequestId,
        result: dict[str, Any],
        events: AsyncIterator[Event],
        task_status: anyio.abc.TaskStatus[None],
    ) -> None:
        """The `subscribe` response goes out before the subscription's first event."""
        sent = await self.send(proto.ok(rid, result))
        task_status.started()
        if sent:
            await self._pump(events)

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
                self.server.count("slow")
                self.close(f"subscriber fell {behind} events behind")
                return
            if batchable and events.statistics().current_buffer_used == 0:  # type: ignore[attr-defined]
                behind = 0  # caught up
            if not await self.send(b"".join(proto.event_line(e.to_dict()) for e in batch)):
                return


class _Session:
    """`ops.Session` for one request on `conn` (its id is where `subscribe` answers)."""

    def __init__(self, conn: Connection, rid: proto.RequestId) -> None:
        self._conn = conn
        self._rid = rid

    @property
    def handle(self) -> SupervisorHandle:
        return self._conn.server.handle

    @property
    def detail_max(self) -> int:
        return self._conn.server.detail_max

    async def reload(self) -> Any:
        hook = self._conn.server.reload
        if hook is None:
            raise ControlError("this server cannot reload its config")
        return await hook()

    def shutdown(self) -> None:
        hook = self._conn.server.shutdown
        if hook is None:
            raise ControlError("this server cannot be shut down over the socket")
        hook()

    async def subscribe(self, max_buffer: int, snapshot: bool) -> None:
        await self._conn.subscribe(self._rid, max_buffer, snapshot)

    def unsubscribe(self) -> None:
        self._conn.unsubscribe()
