"""`RemoteSupervisor`: a `SupervisorHandle` over the control socket, so the TUI, `ctl`
and `attach` use one code path for a local and a remote supervisor
(`control.server` is the other end; docs/protocol.md has the wire format).

The client is generic: `call(op, **args)` encodes the args and decodes the result
by the op's definition in `control.ops`, and each handle method is one such call.
mypy checks that the class satisfies `SupervisorHandle` (`_is_a_handle` below).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.abc

from supervisor.api import (
    ControlError,
    IterationDetail,
    IterationSummary,
    LoopDiff,
    RunSnapshot,
    StepIn,
)
from supervisor.bus import EventBus
from supervisor.control import ops
from supervisor.control import protocol as proto
from supervisor.control.opdef import Op
from supervisor.control.protocol import (
    NotServing,
    RemoteError,
    ServerRefused,
    ServerTimeout,
)
from supervisor.events import Event, Notice, event_from_dict
from supervisor.lines import TranscriptLine
from supervisor.sizes import too_large
from supervisor.spec import Limits

if TYPE_CHECKING:
    from supervisor.api import SupervisorHandle

R = TypeVar("R")


@dataclass(slots=True)
class _Pending:
    done: anyio.Event = dataclasses.field(default_factory=anyio.Event)
    reply: dict[str, Any] | None = None


class RemoteSupervisor:
    """`SupervisorHandle` over the control socket::

        async with RemoteSupervisor(state_dir / "control.sock") as sup:
            print((await sup.snapshot()).loops)

    Raises `NotServing` on enter when nobody answers. Refused operations raise
    `RemoteError` (a `ControlError`). When the connection drops, pending calls raise
    `NotServing`, subscribers get a `Notice` and their iterators end.
    """

    def __init__(
        self, socket_path: Path, *, state_dir: Path | None = None, timeout: float = 10.0
    ) -> None:
        self.socket_path = Path(socket_path)
        self.state_dir = state_dir
        self.timeout = timeout
        self.hello: dict[str, Any] = {}
        self._stack = AsyncExitStack()
        self._stream: anyio.abc.SocketStream | None = None
        self._send_lock = anyio.Lock()
        self._pending: dict[int, _Pending] = {}
        self._next_id = 0
        self._bus = EventBus()
        self._sub_lock = anyio.Lock()
        self._subscribers = 0
        self._server_subscribed = False
        self._closed = anyio.Event()

    def _not_serving(self, why: str) -> NotServing:
        where = self.state_dir if self.state_dir is not None else self.socket_path
        return NotServing(f"no loopvisor is serving {where} ({why})")

    @property
    def connected(self) -> bool:
        return self._stream is not None and not self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def __aenter__(self) -> RemoteSupervisor:
        try:
            await self._connect()
            tg = await self._stack.enter_async_context(anyio.create_task_group())
            tg.start_soon(self._read_loop)
        except BaseException:
            with anyio.CancelScope(shield=True):
                if self._stream is not None:
                    await self._stream.aclose()
                await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            with anyio.CancelScope(shield=True):
                if self._stream is not None:
                    await self._stream.aclose()  # the reader sees EOF and ends
        finally:
            await self._stack.aclose()

    async def _connect(self) -> None:
        path = self.socket_path
        where = self.state_dir if self.state_dir is not None else self.socket_path
        if not (path.exists() or path.is_symlink()):
            raise self._not_serving(f"no socket at {path}")
        try:
            stream = await proto.connect(path, self.timeout)
        except ConnectionRefusedError:
            raise self._not_serving(f"stale socket at {path}: connection refused") from None
        except BlockingIOError:  # AF_UNIX says EAGAIN when the listen backlog is full
            raise ServerRefused(
                f"the loopvisor at {where} refused the connection: its queue of new"
                " connections is full"
            ) from None
        except TimeoutError:
            raise self._timed_out(where, "to accept the connection") from None
        except OSError as exc:
            raise self._not_serving(f"cannot connect to {path}: {exc}") from None
        self._stream = stream
        self._reader = proto.LineReader(stream, proto.MAX_SERVER_LINE)
        with anyio.move_on_after(self.timeout):
            line = await self._reader.next()
            try:
                hello = json.loads(line) if isinstance(line, bytes) else None
            except ValueError:
                hello = None
            if isinstance(hello, dict) and hello.get("hello") == "loopvisor":
                if hello.get("v") != proto.VERSION:
                    raise self._not_serving(
                        f"protocol v{hello.get('v')}, we speak v{proto.VERSION}"
                    )
                self.hello = hello
                return
            if isinstance(hello, dict) and "error" in hello:
                raise ServerRefused(
                    f"the loopvisor at {where} refused the connection: {hello['error']}"
                )
            raise self._not_serving(f"no loopvisor hello on {path}")
        raise self._timed_out(where, "to say hello")

    def _timed_out(self, where: Path, what: str) -> ServerTimeout:
        return ServerTimeout(
            f"timed out waiting for the loopvisor at {where} {what} (waited {self.timeout:g}s)"
        )

    async def _read_loop(self) -> None:
        try:
            while (line := await self._reader.next()) is not None:
                if isinstance(line, proto.Oversized):
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(msg, dict):
                    continue
                if isinstance(msg.get("event"), dict):
                    try:
                        event = event_from_dict(msg["event"])
                    except (ValueError, TypeError):
                        continue  # a newer server's event type: skip it
                    self._bus.publish(event)
                elif isinstance(rid := msg.get("id"), int) and (w := self._pending.get(rid)):
                    w.reply = msg
                    w.done.set()
        finally:
            self._closed.set()
            for waiter in self._pending.values():
                waiter.done.set()
            self._bus.publish(
                Notice(level="error", message=f"connection to loopvisor lost ({self.socket_path})")
            )
            self._bus.close()

    async def request(self, op: str, **args: Any) -> Any:
        """Send one request and wait for its response (RemoteError / NotServing on failure)."""
        if self._stream is None or self._closed.is_set():
            raise self._not_serving("connection closed")
        self._next_id += 1
        rid = self._next_id
        line = proto.encode({"id": rid, "op": op, "args": args})
        if len(line) > proto.MAX_REQUEST_LINE:  # the server would skip it unanswered
            problem = too_large(f"the {op} request", len(line), proto.MAX_REQUEST_LINE)
            raise RemoteError(f"{problem}; not sent", "protocol")
        waiter = self._pending[rid] = _Pending()
        try:
            async with self._send_lock:
                await self._stream.send(line)
            await waiter.done.wait()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            raise self._not_serving("connection lost") from None
        finally:
            self._pending.pop(rid, None)
        reply = waiter.reply
        if reply is None:
            raise self._not_serving("connection lost")
        if not reply.get("ok"):
            raise RemoteError(str(reply.get("error")), reply.get("kind", "control"))
        return reply.get("result")

    async def call(self, op: Op[R], **args: Any) -> R:
        """Run `op` on the server: args encoded and the result decoded by its definition."""
        return op.result(await self.request(op.name, **op.encode(args)))

    # -- SupervisorHandle ---------------------------------------------------------
    async def snapshot(self, *, tail: int = 200) -> RunSnapshot:
        return await self.call(ops.SNAPSHOT, tail=tail)

    def subscribe(
        self, max_buffer: int = 1000
    ) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        return self._events_only(max_buffer)

    @asynccontextmanager
    async def _events_only(self, max_buffer: int) -> AsyncIterator[AsyncIterator[Event]]:
        async with self._subscription(max_buffer, snapshot=False) as (_, events):
            yield events

    @asynccontextmanager
    async def subscribe_with_snapshot(
        self, max_buffer: int = 1000
    ) -> AsyncIterator[tuple[RunSnapshot, AsyncIterator[Event]]]:
        """Events plus the state they start from, taken at one instant by the server.

        The connection's one server subscription is shared by its local subscribers;
        when it already runs, its stream began before now, so this subscriber gets
        a connection of its own (one more client slot while it lasts) rather than a
        snapshot that events could fall between or be counted twice across.
        """
        async with self._subscription(max_buffer, snapshot=True) as (snap, events):
            if snap is not None:
                yield snap, events
                return
        own = RemoteSupervisor(self.socket_path, state_dir=self.state_dir, timeout=self.timeout)
        async with own, own._subscription(max_buffer, snapshot=True) as (snap, events):
            if snap is None:  # pragma: no cover - a fresh connection has no subscription
                raise RemoteError("the server sent no snapshot with the subscription")
            yield snap, events

    @asynccontextmanager
    async def _subscription(
        self, max_buffer: int, *, snapshot: bool
    ) -> AsyncIterator[tuple[RunSnapshot | None, AsyncIterator[Event]]]:
        """A local subscriber of the connection's server subscription (started by the
        first one, ended with the last). With `snapshot`, the first one gets the
        snapshot the server took as the stream began; later ones get None."""
        async with self._bus.subscribe(max_buffer) as events:
            self._subscribers += 1
            try:
                snap: RunSnapshot | None = None
                async with self._sub_lock:
                    if not self._server_subscribed:
                        result = await self.call(
                            ops.SUBSCRIBE, max_buffer=ops.SUBSCRIPTION_BUFFER, snapshot=snapshot
                        )
                        self._server_subscribed = True
                        if snapshot:
                            snap = RunSnapshot.from_dict(result["snapshot"])
                yield snap, events
            finally:
                self._subscribers -= 1
                await self._maybe_unsubscribe()

    async def _maybe_unsubscribe(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            async with self._sub_lock:
                if self._subscribers or not self._server_subscribed:
                    return
                self._server_subscribed = False
                with contextlib.suppress(ControlError):
                    await self.call(ops.UNSUBSCRIBE)

    async def pause(self, loop: str | None = None) -> None:
        await self.call(ops.PAUSE, loop=loop)

    async def resume(self, loop: str | None = None) -> None:
        await self.call(ops.RESUME, loop=loop)

    async def stop(self, loop: str | None = None) -> None:
        await self.call(ops.STOP, loop=loop)

    async def restart(self, loop: str) -> None:
        await self.call(ops.RESTART, loop=loop)

    async def inject(self, loop: str, text: str) -> None:
        await self.call(ops.INJECT, loop=loop, text=text)

    async def edit(
        self,
        loop: str,
        *,
        prompt: str | None = None,
        max_iterations: int | None = None,
        limits: Limits | None = None,
    ) -> None:
        await self.call(
            ops.EDIT, loop=loop, prompt=prompt, max_iterations=max_iterations, limits=limits
        )

    async def budget(self, limits: Limits | None) -> None:
        await self.call(ops.BUDGET, limits=limits)

    async def step_in(self, loop: str) -> StepIn:
        return await self.call(ops.STEP_IN, loop=loop)

    async def chat(self, loop: str, text: str) -> str:
        return await self.call(ops.CHAT, loop=loop, text=text)

    async def hand_back(self, loop: str) -> None:
        await self.call(ops.HAND_BACK, loop=loop)

    async def transcript(
        self, loop: str, *, before: int | None = None, limit: int = 500
    ) -> list[TranscriptLine]:
        return await self.call(ops.TRANSCRIPT, loop=loop, before=before, limit=limit)

    async def iterations(self, loop: str, *, limit: int = 1000) -> list[IterationSummary]:
        return await self.call(ops.ITERATIONS, loop=loop, limit=limit)

    async def iteration(self, loop: str, iteration: int) -> IterationDetail:
        """Over the socket a transcript past `sizes.DETAIL_WIRE_MAX_BYTES` comes cut in
        the middle, with a line saying so (the journal on the server has all of it)."""
        return await self.call(ops.ITERATION, loop=loop, iteration=iteration)

    async def diff(self, loop: str, *, iteration: int | None = None) -> LoopDiff:
        return await self.call(ops.DIFF, loop=loop, iteration=iteration)

    async def land(
        self,
        loop: str,
        *,
        squash: bool = False,
        into: str | None = None,
        push: str | None = None,
        pr: bool = False,
    ) -> str:
        return await self.call(ops.LAND, loop=loop, squash=squash, into=into, push=push, pr=pr)

    async def fork(
        self, loop: str, *, iteration: int, name: str | None = None, prompt: str | None = None
    ) -> str:
        return await self.call(ops.FORK, loop=loop, iteration=iteration, name=name, prompt=prompt)

    async def add(
        self,
        name: str,
        *,
        like: str,
        prompt: str | None = None,
        max_iterations: int | None = None,
        limits: Limits | None = None,
    ) -> str:
        return await self.call(
            ops.ADD,
            name=name,
            like=like,
            prompt=prompt,
            max_iterations=max_iterations,
            limits=limits,
        )

    async def shutdown(self) -> None:
        """Ask the server to stop every loop and exit (returns once it accepted)."""
        await self.call(ops.SHUTDOWN)

    # -- serve-only operations ------------------------------------------------------
    async def reload(self) -> dict[str, Any]:
        """Re-read loops.toml on the server; RemoteError(kind="config") if it is invalid."""
        return await self.call(ops.RELOAD)


if TYPE_CHECKING:

    def _is_a_handle(remote: RemoteSupervisor) -> SupervisorHandle:
        """Never called: mypy checks here that RemoteSupervisor satisfies the Protocol
        (the composition root hands it to the TUI as a SupervisorHandle)."""
        return remote
