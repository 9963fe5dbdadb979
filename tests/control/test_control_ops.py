"""Control ops defined once (`supervisor/control/ops.py`): the docs' table is theirs,
the server dispatches every one of them, the client is their thin mirror, and a
subscription with a snapshot is one instant, in-process and over the socket."""

from __future__ import annotations

import contextlib
import inspect
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import pytest
from helpers import REPO, load, loop, sim_agent, supervisor_table, wait_for

from supervisor import events as ev
from supervisor.api import LoopSnapshot, RunSnapshot, SupervisorHandle
from supervisor.control import ops
from supervisor.control import protocol as proto
from supervisor.control.client import RemoteSupervisor
from supervisor.control.opdef import STRING
from supervisor.control.server import ControlServer
from supervisor.lines import STREAM_KINDS, TranscriptLine, stream_tag
from supervisor.render import describe
from supervisor.runtime import Supervisor
from supervisor.spec import Config
from supervisor.transcript import TranscriptTail

DOC = REPO / "docs" / "protocol.md"


def test_the_docs_table_of_ops_is_generated_from_the_definitions() -> None:
    """Adding an op without its docs fails here: the table between the markers in
    docs/protocol.md is exactly `ops.markdown_table()`."""
    check = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "protocol_ops.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    text = DOC.read_text(encoding="utf-8")
    for op in ops.OPS:
        assert f"| `{op.name}`" in text
    assert ops.markdown_table() in text


def test_every_op_is_one_definition_that_the_hello_and_the_parser_use() -> None:
    assert proto.OPS == tuple(op.name for op in ops.OPS) == tuple(ops.BY_NAME)
    assert len(set(proto.OPS)) == len(proto.OPS)
    # the v1 ops come first, in their old order; new ones are additions
    assert proto.OPS[:15] == (
        "snapshot", "pause", "resume", "stop", "restart", "inject", "edit", "step_in",
        "chat", "hand_back", "transcript", "reload", "shutdown", "subscribe", "unsubscribe",
    )  # fmt: skip
    for op in ops.OPS:
        required = {a.name: "x" if a.type is STRING else 1 for a in op.args if a.required}
        assert op.problem(required) is None, op.name
        assert op.problem({**required, "typo": 1}) == f"{op.name}: unknown arg(s): typo"
        decoded = op.decode(required)
        assert set(decoded) == {a.name for a in op.args}


def test_each_handle_method_the_client_offers_is_an_op() -> None:
    """The handle's methods, and the client's, map onto the table: a Protocol method
    without an op (or the reverse) would be a second place to define one."""
    handle_methods = {
        name
        for name, _ in inspect.getmembers(SupervisorHandle, inspect.isfunction)
        if not name.startswith("_")
    }
    local_only = {"subscribe_with_snapshot"}  # `subscribe` with `"snapshot": true`
    assert handle_methods - local_only <= set(ops.BY_NAME)
    for name in handle_methods:
        assert callable(getattr(RemoteSupervisor, name)), name


def test_args_keep_their_old_defaults_and_clamps() -> None:
    assert ops.SNAPSHOT.decode({}) == {"tail": 200}
    assert ops.SNAPSHOT.decode({"tail": -5}) == {"tail": 0}
    assert ops.TRANSCRIPT.decode({"loop": "a", "limit": 0})["limit"] == 500
    assert ops.TRANSCRIPT.decode({"loop": "a", "limit": 99_999})["limit"] == 10_000
    assert ops.SUBSCRIBE.decode({}) == {"max_buffer": 2000, "snapshot": False}
    assert ops.SUBSCRIBE.decode({"max_buffer": 10**9})["max_buffer"] == 20_000
    edit = ops.EDIT.decode({"loop": "a", "limits": {"tokens": 5}})
    assert edit["limits"].tokens == 5
    assert edit["prompt"] is None
    assert ops.EDIT.problem({"loop": "a", "limits": {"tokens": 1.5}}) is not None
    assert ops.ITERATION.problem({"loop": "a"}) == "iteration: missing arg 'iteration'"
    assert ops.ITERATION.problem({"loop": "a", "iteration": True}) is not None


# -- subscribe with a snapshot: one instant ----------------------------------------------
def flowing(tmp_path: Path) -> Config:
    """One sim loop that streams for a few iterations, then ends by itself."""
    (tmp_path / "w").mkdir()
    return load(
        tmp_path,
        supervisor_table(2),
        sim_agent("s", rate=400, reply_tokens=60),
        loop(
            "a",
            "s",
            workspace="w",
            max_iterations=5,
            done_marker="NEVER-SAID",
            on_stuck="continue",
        ),
    )


def replay(start: LoopSnapshot, events: Sequence[ev.Event]) -> tuple[TranscriptLine, ...]:
    """The loop's transcript tail rebuilt from a snapshot and the events after it, the
    way the core builds its own (`LoopRunner.emit`)."""
    tail = TranscriptTail()
    lines = start.transcript_tail
    complete = lines[:-1] if start.transcript_streaming else lines
    for line in complete:
        tail.add_line(line)
    if start.transcript_streaming:  # a line being streamed goes on in its own stream
        kind, text = lines[-1]
        stream = next(s for s, k in STREAM_KINDS.items() if k == kind)
        tail.add(text.removeprefix(stream_tag(stream)), stream)
    for event in events:
        if getattr(event, "loop", None) != start.name:
            continue
        if isinstance(event, ev.AgentOutput):
            tail.add(event.text, event.stream)
        elif (described := describe(event)) is not None:
            tail.add_line(described)
    return tail.snapshot()


async def follow_to_the_end(
    sup: Supervisor, snap: RunSnapshot, events: AsyncIterator[ev.Event]
) -> tuple[TranscriptLine, ...]:
    """Events until loop `a` ended; the tail rebuilt from `snap` and them."""
    seen: list[ev.Event] = []
    with anyio.fail_after(30):
        async for event in events:
            assert not isinstance(event, ev.EventsDropped)
            seen.append(event)
            if isinstance(event, ev.LoopStateChanged) and event.state in ev.END_STATES:
                break
    assert any(isinstance(e, ev.AgentOutput) for e in seen), "the snapshot was not mid-run"
    rebuilt = replay(snap.loops[0], seen)
    core = sup.runners["a"].tail.snapshot()
    assert len(rebuilt) > len(snap.loops[0].transcript_tail)
    return rebuilt[-len(core) :] if len(rebuilt) > len(core) else rebuilt


@pytest.mark.anyio
async def test_in_process_snapshot_and_events_join_exactly(tmp_path: Path) -> None:
    sup = Supervisor(flowing(tmp_path), exit_when_idle=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sup.run)
        await wait_for(lambda: len(sup.runners["a"].tail.snapshot()) > 3)
        async with sup.subscribe_with_snapshot(10_000) as (snap, events):
            rebuilt = await follow_to_the_end(sup, snap, events)
        core = sup.runners["a"].tail.snapshot()
        assert rebuilt == core[-len(rebuilt) :]
        tg.cancel_scope.cancel()
    await sup.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("second", [False, True], ids=["first-subscriber", "second-subscriber"])
async def test_remote_snapshot_and_events_join_exactly(tmp_path: Path, second: bool) -> None:
    """Over the socket too: for the connection's first subscriber (the server takes
    both at one instant) and for a second one while the first's stream runs (it gets
    a connection of its own)."""
    sup = Supervisor(flowing(tmp_path), exit_when_idle=False)
    sock = tmp_path / "sock" / "control.sock"
    server = ControlServer(sup, sock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sup.run)
        await tg.start(server.serve)
        async with (
            RemoteSupervisor(sock) as remote,
            remote.subscribe() if second else contextlib.nullcontext(),
        ):
            await wait_for(lambda: len(sup.runners["a"].tail.snapshot()) > 3)
            async with remote.subscribe_with_snapshot(10_000) as (snap, events):
                assert server.statistics().clients == (2 if second else 1)
                rebuilt = await follow_to_the_end(sup, snap, events)
        core = sup.runners["a"].tail.snapshot()
        assert rebuilt == core[-len(rebuilt) :]
        tg.cancel_scope.cancel()
    await sup.aclose()
