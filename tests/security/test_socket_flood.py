"""Issue 10 item 8: the control socket under a flood of clients that hold a slot.

Seventy idle connections used to fill all 64 client slots forever, and every later
client (the operator's `ctl` included) was told "no loopvisor is serving". Now an
idle connection is dropped after the handshake timeout, a new client takes the
slot of the longest-idle one when the server is full, subscriptions never take the
last slots, and a client's error names the real reason.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from pathlib import Path

import anyio
import pytest
from control_support import RawClient, endless, serving
from daemon import kill_daemon, lv, sim_loops_toml, start_daemon
from helpers import wait_gone

from supervisor.control.client import RemoteSupervisor
from supervisor.control.protocol import NotServing, RemoteError, ServerRefused, ServerTimeout


def idle_connection(path: Path) -> socket.socket:
    """A client that connects and never sends a byte."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(path))
    return sock


def read_to_eof(sock: socket.socket, timeout: float = 5.0) -> list[dict[str, object]]:
    """Every line the server sent until it closed the connection."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def test_ctl_answers_while_70_idle_clients_hold_the_socket(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, sim_loops_toml())
    with ExitStack() as held:
        try:
            idle = [held.enter_context(idle_connection(daemon.socket)) for _ in range(70)]
            status = daemon.ctl("status", "--json")
            assert status.returncode == 0, status.stderr
            assert [x["name"] for x in json.loads(status.stdout)["loops"]] == ["l0", "l1"]
            # the oldest idle connection made room: told why, then closed
            lines = read_to_eof(idle[0])
            assert lines[0]["hello"] == "loopvisor"
            assert lines[-1]["kind"] == "busy"
            assert "idle" in str(lines[-1]["error"])
        finally:
            kill_daemon(daemon.pid)


@pytest.mark.anyio
async def test_an_idle_connection_is_dropped_after_the_handshake_timeout(tmp_path: Path) -> None:
    sock = tmp_path / "control.sock"
    async with (
        serving(endless(tmp_path, loops=1), sock, handshake_s=0.5) as (_sup, server),
        RawClient.connect(sock) as idle,
        RawClient.connect(sock) as talker,
    ):
        assert (await idle.message()) is not None  # the hello
        assert (await talker.message()) is not None
        await talker.send(b'{"id": 1, "op": "snapshot", "args": {"tail": 0}}\n')
        assert (await talker.message() or {}).get("ok") is True
        started = anyio.current_time()
        bye = await idle.message(timeout=5)
        assert bye is not None
        assert bye["kind"] == "busy"
        assert "no request within 0.5s" in bye["error"]
        assert await idle.message() is None, "and the connection is closed"
        assert anyio.current_time() - started < 3
        # a client that made its first request in time stays connected
        await talker.send(b'{"id": 2, "op": "snapshot", "args": {"tail": 0}}\n')
        assert (await talker.message() or {}).get("ok") is True
        assert server.statistics().clients == 1


@pytest.mark.anyio
async def test_subscribers_cannot_take_the_operators_slot(tmp_path: Path) -> None:
    """max_clients=8 keeps 4 slots free of subscriptions: the 5th subscribe is refused
    and a `ctl`-style request still gets in while 8 connections are open."""
    sock = tmp_path / "control.sock"
    async with (
        serving(endless(tmp_path, loops=1), sock, max_clients=8),
        AsyncExitStack() as held,
    ):
        refusals: list[str] = []
        for _ in range(8):
            remote = await held.enter_async_context(RemoteSupervisor(sock))
            try:
                await remote.request("subscribe")
            except RemoteError as exc:
                refusals.append(str(exc))
        assert len(refusals) == 4
        assert all("too many subscribers (4)" in why for why in refusals)
        async with RemoteSupervisor(sock) as operator:
            assert [x.name for x in (await operator.snapshot()).loops] == ["l0"]


@contextmanager
def fake_server(path: Path, first_line: bytes | None) -> Iterator[None]:
    """A Unix socket listener that says `first_line` (or nothing) to every client."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)
            if first_line is not None:
                conn.sendall(first_line)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


@pytest.mark.anyio
async def test_a_refusal_is_reported_as_a_refusal_not_as_nobody_serving(tmp_path: Path) -> None:
    sock = tmp_path / "control.sock"
    refusal = b'{"id":null,"ok":false,"error":"too many clients (64 busy)","kind":"busy"}\n'
    with fake_server(sock, refusal), pytest.raises(ServerRefused) as caught:
        async with RemoteSupervisor(sock):
            pass
    message = str(caught.value)
    assert "no loopvisor is serving" not in message
    assert f"the loopvisor at {sock} refused the connection: too many clients" in message


@pytest.mark.anyio
async def test_a_silent_server_is_a_timeout_not_nobody_serving(tmp_path: Path) -> None:
    sock = tmp_path / "control.sock"
    with fake_server(sock, None), pytest.raises(ServerTimeout) as caught:
        async with RemoteSupervisor(sock, timeout=0.5):
            pass
    message = str(caught.value)
    assert "no loopvisor is serving" not in message
    assert f"timed out waiting for the loopvisor at {sock}" in message
    assert isinstance(caught.value, NotServing)  # callers that catch NotServing still do


def test_ctl_names_the_refusal_and_exits_1(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    refusal = b'{"id":null,"ok":false,"error":"too many clients (64 busy)","kind":"busy"}\n'
    with fake_server(state / "control.sock", refusal):
        r = lv("ctl", "status", "--json", "--state-dir", state, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "refused the connection: too many clients" in r.stderr
    assert "no loopvisor is serving" not in r.stderr
    assert json.loads(r.stdout)["kind"] == "refused"


def subscribed_connection(path: Path) -> socket.socket:
    """A client that subscribes (and then never reads its events)."""
    sock = idle_connection(path)
    sock.sendall(b'{"id": 1, "op": "subscribe"}\n')
    data = b""
    while b'"id":1,' not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the subscribe answer: {data!r}"
        data += chunk
    return sock


def test_ctl_shutdown_works_when_subscribers_hold_every_slot_they_may(tmp_path: Path) -> None:
    """60 subscribers (the cap) and 4 idle sockets: `ctl shutdown` cannot subscribe for
    the summary, gets in anyway and stops the server."""
    daemon = start_daemon(tmp_path, sim_loops_toml())
    with ExitStack() as held:
        try:
            for _ in range(60):
                held.enter_context(subscribed_connection(daemon.socket))
            for _ in range(4):
                held.enter_context(idle_connection(daemon.socket))
            r = daemon.ctl("shutdown", "--json")
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout) == {"ok": True, "result": None}
            assert wait_gone([daemon.pid], timeout=20) == []
        finally:
            kill_daemon(daemon.pid)
