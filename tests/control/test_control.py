"""The control socket in-process: a real `ControlServer` on a real Unix socket in
tmp_path, serving a real `Supervisor` of sim loops, driven by `RemoteSupervisor` and
by raw sockets that misbehave (garbage, oversized lines, stalled readers, wrong uid).
"""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import anyio
import anyio.abc
import pytest
from control_support import RawClient, endless, serving
from helpers import load, loop, sim_agent, wait_for

from supervisor import events as ev
from supervisor.api import ControlError
from supervisor.control import protocol as proto
from supervisor.control.client import RemoteSupervisor
from supervisor.control.protocol import NotServing, RemoteError
from supervisor.control.server import ControlServer, ControlSocketError
from supervisor.lines import LineKind
from supervisor.runtime import Supervisor
from supervisor.spec import Limits

pytestmark = pytest.mark.anyio


async def test_remote_supervisor_drives_the_whole_handle(tmp_path: Path) -> None:
    """snapshot, subscribe, inject, edit, pause/resume, step-in + chat + hand back,
    transcript and refused ops, all through the socket."""
    sock = tmp_path / "run" / "control.sock"
    async with (
        serving(endless(tmp_path), sock) as (sup, _server),
        RemoteSupervisor(sock) as remote,
    ):
        assert remote.hello["v"] == proto.VERSION
        assert "snapshot" in remote.hello["ops"]
        snap = await remote.snapshot()
        assert [x.name for x in snap.loops] == ["l0", "l1"]
        assert snap.run_id == sup.run_id

        async with remote.subscribe() as events:
            seen: list[ev.Event] = []
            await remote.inject("l0", "please look at the parser")
            await remote.edit("l0", max_iterations=77, limits=Limits(tokens=500_000))
            with anyio.fail_after(10):
                async for event in events:
                    seen.append(event)
                    ops = {e.op for e in seen if isinstance(e, ev.ControlApplied)}
                    outputs = [e for e in seen if isinstance(e, ev.AgentOutput)]
                    if {"inject", "edit"} <= ops and outputs:
                        break
        snap = await remote.snapshot()
        l0 = next(x for x in snap.loops if x.name == "l0")
        assert l0.max_iterations == 77
        assert l0.limits.tokens == 500_000
        assert sup.runners["l0"].spec.max_iterations == 77

        await remote.pause("l1")
        await wait_for(lambda: sup.runners["l1"].state == "paused", timeout=10)
        await remote.resume("l1")
        await wait_for(lambda: sup.runners["l1"].state != "paused", timeout=10)

        step = await remote.step_in("l0")
        assert step.loop == "l0"
        assert step.chat
        assert step.agent_kind == "sim"
        assert sup.runners["l0"].state == "paused"
        reply = await remote.chat("l0", "what are you doing?")
        assert reply.strip()
        await remote.hand_back("l0")
        await wait_for(lambda: sup.runners["l0"].state != "paused", timeout=10)

        lines = await remote.transcript("l0", limit=5)
        assert 0 < len(lines) <= 5

        with pytest.raises(ControlError, match="no loop named 'nope'"):
            await remote.pause("nope")
        with pytest.raises(RemoteError, match="nothing to inject"):
            await remote.inject("l0", "   ")
        with pytest.raises(RemoteError, match="cannot reload"):
            await remote.reload()  # a bare ControlServer has no reload hook
        assert (await remote.snapshot()).loops  # still answering after refusals


async def test_subscribe_with_snapshot_returns_state_then_later_events(tmp_path: Path) -> None:
    sock = tmp_path / "control.sock"
    async with (
        serving(endless(tmp_path), sock),
        RemoteSupervisor(sock) as remote,
        remote.subscribe_with_snapshot() as (snap, events),
    ):
        assert snap is not None
        assert {x.name for x in snap.loops} == {"l0", "l1"}
        with anyio.fail_after(10):
            async for event in events:
                if isinstance(event, ev.IterationStarted):
                    assert event.ts >= snap.started_at
                    break


async def test_socket_is_0600_in_a_0700_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "state"
    run_dir.mkdir(mode=0o755)
    os.chmod(run_dir, 0o755)  # a pre-existing, too open directory gets tightened
    sock = run_dir / "control.sock"
    async with serving(endless(tmp_path, loops=1), sock):
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert not sock.exists(), "the socket is removed when the server stops"


async def test_other_uid_is_refused_and_the_server_keeps_serving(tmp_path: Path) -> None:
    sock = tmp_path / "control.sock"
    not_us = os.getuid() + 4242
    async with serving(endless(tmp_path, loops=1), sock, allowed_uid=not_us) as (sup, server):
        with pytest.raises(NotServing, match=f"permission denied: uid {os.getuid()}"):
            async with RemoteSupervisor(sock):
                pass
        async with RawClient.connect(sock) as raw:
            refusal = await raw.message()
            assert refusal is not None
            assert refusal["kind"] == "permission"
            assert await raw.message() is None, "the refused connection is closed"
            assert "hello" not in refusal
        assert server.statistics().refused == 2
        assert server.statistics().accepted == 0
        it = sup.runners["l0"].iteration
        await wait_for(lambda: sup.runners["l0"].iteration > it, timeout=10)


async def test_malformed_flood_gets_errors_and_the_server_stays_healthy(tmp_path: Path) -> None:
    """1,000 bad lines (with a valid request every 50, so the connection is kept) and
    a 2 MiB line: every bad line gets a protocol error, every good one an answer."""
    sock = tmp_path / "control.sock"
    kinds = [
        b"not json at all",
        b"[1, 2, 3]",
        b'{"op": "snapshot"}',  # no id
        b'{"id": 1, "op": "fly"}',
        b'{"id": 2, "op": "pause", "args": {"loop": 5}}',
        b'{"id": 3, "op": "inject", "args": {"loop": "l0"}}',
        b'{"id": 4, "op": "snapshot", "args": {"bogus": 1}}',
        b'{"id": 5, "v": 99, "op": "snapshot"}',
        b'{"id": 6, "op": "edit", "args": {"loop": "l0", "limits": {"tokens": "x"}}}',
        b"\xff\xfe\x00 binary",
        b"[" * 100_000,  # deep nesting
        b'{"id": true, "op": "snapshot"}',
    ]
    async with (
        serving(endless(tmp_path), sock) as (sup, server),
        RawClient.connect(sock) as raw,
    ):
        hello = await raw.message()
        assert hello is not None
        assert hello["hello"] == "loopvisor"
        expected_ok = 0
        payload = bytearray()
        for i in range(1000):
            payload += kinds[i % len(kinds)] + b"\n"
            if i % 50 == 49:
                payload += json.dumps({"id": f"ok{i}", "op": "snapshot"}).encode() + b"\n"
                expected_ok += 1
        payload += b'{"id": 9999, "op": "inject", "args": {"text": "' + b"x" * (2 << 20) + b'"}}\n'
        payload += b'{"id": "last", "op": "snapshot"}\n'
        expected_ok += 1

        async def send_all() -> None:
            await raw.send(bytes(payload))

        errors, oks = 0, 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(send_all)
            while errors + oks < 1001 + expected_ok:
                msg = await raw.message(timeout=20)
                assert msg is not None, f"disconnected after {errors} errors, {oks} answers"
                if msg["ok"]:
                    oks += 1
                    assert str(msg["id"]).startswith(("ok", "last"))
                else:
                    errors += 1
                    assert msg["kind"] == "protocol"
                    assert msg["error"]
        assert (errors, oks) == (1001, expected_ok)
        assert server.statistics().malformed == 1001

    async with serving(endless(tmp_path), sock) as (sup, server):
        async with RawClient.connect(sock) as raw:  # pure garbage: cut off after 100
            await raw.message()
            await raw.send(b"garbage\n" * 150)
            replies = []
            while (msg := await raw.message()) is not None:
                replies.append(msg)
            assert len(replies) == 101
            assert "closing" in replies[-1]["error"]
        async with RemoteSupervisor(sock) as remote:  # the server is fine
            it = (await remote.snapshot()).loops[0].iteration
            await wait_for(lambda: sup.runners["l0"].iteration > it, timeout=10)


async def test_stalled_subscriber_is_disconnected_and_never_slows_loops(tmp_path: Path) -> None:
    """A client that subscribes and never reads: its bus subscription drops events and
    the server disconnects it once a write stays blocked; loops run on meanwhile."""
    sock = tmp_path / "control.sock"
    config = endless(tmp_path, rate=0, reply_tokens=4000, loops=3)
    async with serving(config, sock, stall_s=1.0) as (sup, server):
        async with RawClient.connect(sock) as raw:
            await raw.message()
            await raw.send(b'{"id": 1, "op": "subscribe", "args": {"max_buffer": 50}}\n')
            with anyio.fail_after(30):
                while server.statistics().slow_disconnects == 0:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
        assert sup.bus.statistics().dropped > 0, "the bus coalesced what the client missed"
        await wait_for(lambda: server.statistics().clients == 0, timeout=5)
        await wait_for(lambda: sup.bus.statistics().subscribers == 0, timeout=5)
        it = sup.runners["l0"].iteration
        await wait_for(lambda: sup.runners["l0"].iteration > it + 2, timeout=10)


async def test_lost_connection_ends_subscriptions_and_fails_requests(tmp_path: Path) -> None:
    sock = tmp_path / "control.sock"
    sup = Supervisor(endless(tmp_path, loops=1), exit_when_idle=False)
    server = ControlServer(sup, sock)
    server_scope = anyio.CancelScope()

    async def run_server(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        with server_scope:
            await server.serve(task_status=task_status)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sup.run)
        await tg.start(run_server)
        async with RemoteSupervisor(sock) as remote, remote.subscribe() as events:
            await remote.snapshot()
            server_scope.cancel()  # the server goes away mid-stream
            last: ev.Event | None = None
            with anyio.fail_after(10):
                async for event in events:
                    last = event
            assert isinstance(last, ev.Notice)
            assert "connection to loopvisor lost" in last.message
            with pytest.raises(NotServing):
                await remote.snapshot()
        tg.cancel_scope.cancel()
    await sup.aclose()


async def test_a_second_server_on_a_live_socket_is_refused_a_stale_one_replaced(
    tmp_path: Path,
) -> None:
    sock = tmp_path / "control.sock"
    config = endless(tmp_path, loops=1)
    async with serving(config, sock):
        with pytest.raises(ExceptionGroup) as info:
            async with serving(config, sock):
                pass
        assert info.group_contains(ControlSocketError, match="already serving")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()  # a socket file nobody listens on, as after kill -9
    with pytest.raises(NotServing, match="stale socket"):
        async with RemoteSupervisor(sock):
            pass
    async with serving(config, sock), RemoteSupervisor(sock) as remote:
        assert (await remote.snapshot()).loops


async def test_socket_paths_longer_than_sun_path_work(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    sock = deep / "control.sock"
    assert len(os.fsencode(sock)) > 108
    async with serving(endless(tmp_path, loops=1), sock), RemoteSupervisor(sock) as remote:
        assert (await remote.snapshot()).loops[0].name == "l0"


async def test_missing_socket_is_a_clear_not_serving_error(tmp_path: Path) -> None:
    with pytest.raises(NotServing, match=r"no loopvisor is serving .*state \(no socket at"):
        async with RemoteSupervisor(
            tmp_path / "state" / "control.sock", state_dir=tmp_path / "state"
        ):
            pass


def test_parse_request_accepts_good_and_names_what_is_wrong() -> None:
    req = proto.parse_request(
        b'{"v": 1, "id": 3, "op": "edit", "args": {"loop": "a", '
        b'"limits": {"tokens": 10, "usd": 1.5}}}'
    )
    assert (req.id, req.op, req.args["limits"]["usd"]) == (3, "edit", 1.5)
    assert proto.parse_request(b'{"id": "x", "op": "pause"}').args == {}
    for line, message in [
        (b'{"id": 1, "op": "stop", "args": []}', '"args" must be an object'),
        (b'{"id": 1, "op": "restart"}', "missing arg 'loop'"),
        (b'{"id": 1, "op": "snapshot", "extra": 1}', "unknown field"),
        (b'{"id": 1, "op": "transcript", "args": {"loop": "a", "limit": 1.5}}', "integer"),
    ]:
        with pytest.raises(proto.ProtocolError, match=message) as info:
            proto.parse_request(line)
        assert info.value.request_id == 1


@pytest.mark.anyio
async def test_snapshot_tail_zero_leaves_transcripts_out_over_the_socket(tmp_path: Path) -> None:
    """A UI polling at 4 Hz asks for tail=0: no transcript lines cross the socket; a
    tail's lines come with their kinds."""
    from supervisor.runtime import Supervisor

    (tmp_path / "w").mkdir()
    config = load(
        tmp_path,
        sim_agent("s", rate=0, reply_tokens=5, converge_after=1),
        loop("a", "s", workspace="w", done_marker="never", max_iterations=1),
    )
    sup = Supervisor(config, exit_when_idle=False)
    path = tmp_path / "sock" / "control.sock"
    async with anyio.create_task_group() as tg:
        tg.start_soon(sup.run)
        server = ControlServer(sup, path)
        await tg.start(server.serve)
        async with RemoteSupervisor(path) as remote:
            await wait_for(lambda: bool(sup.snapshot_now().loops[0].transcript_tail))
            full = await remote.snapshot()
            bare = await remote.snapshot(tail=0)
            two = await remote.snapshot(tail=2)
        assert len(full.loops[0].transcript_tail) > 2
        kinds = {line.kind for line in full.loops[0].transcript_tail}
        assert LineKind.ITERATION in kinds  # kinds cross the socket beside the texts
        assert LineKind.PLAIN not in kinds
        assert bare.loops[0].transcript_tail == ()
        assert two.loops[0].transcript_tail == full.loops[0].transcript_tail[-2:]
        tg.cancel_scope.cancel()
