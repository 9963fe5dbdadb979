"""A loop's iterations and one iteration's detail through the handle: in-process from a
durable run's journal, the same over the control socket, and bounded there (a
transcript past the line budget arrives cut in the middle, saying so)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import PY, command_agent, load, loop, sim_agent, supervisor_table, wait_for

from supervisor.api import ControlError, IterationSummary
from supervisor.control import bounds
from supervisor.control import protocol as proto
from supervisor.control.client import RemoteSupervisor
from supervisor.control.server import ControlServer
from supervisor.durable import durable_supervisor
from supervisor.runtime import Supervisor
from supervisor.spec import Config

pytestmark = pytest.mark.anyio


def converging(tmp_path: Path) -> Config:
    """`fizz` succeeds in iteration 2 (its sim agent writes done.txt, the check wants it)."""
    (tmp_path / "ws").mkdir()
    check = {
        "name": "done",
        "run": [PY, "-c", "import os, sys; sys.exit(not os.path.exists('done.txt'))"],
    }
    return load(
        tmp_path,
        supervisor_table(2),
        sim_agent("conv", rate=0, reply_tokens=10, converge_after=2, files={"done.txt": "ok"}),
        loop("fizz", "conv", checks=[check], workspace="ws"),
    )


@asynccontextmanager
async def served(
    config: Config, sock: Path, **server_kw: Any
) -> AsyncIterator[tuple[Supervisor, RemoteSupervisor]]:
    """A durable (journalled) run served on `sock`, and a client of it."""
    async with durable_supervisor(config, exit_when_idle=False) as sup:
        server = ControlServer(sup, sock, **server_kw)
        async with anyio.create_task_group() as tg:
            tg.start_soon(sup.run)
            await tg.start(server.serve)
            async with RemoteSupervisor(sock) as remote:
                yield sup, remote
            tg.cancel_scope.cancel()  # the run and the server


async def finished_rows(handle: RemoteSupervisor, loop_name: str) -> list[IterationSummary]:
    """The loop's rows once the journal has the last one's outcome (it commits every
    ~50 ms, after the loop's state changed)."""
    rows: list[IterationSummary] = []

    async def committed() -> bool:
        rows[:] = await handle.iterations(loop_name)
        return bool(rows) and all(r.outcome is not None for r in rows)

    with anyio.fail_after(10):
        while not await committed():  # noqa: ASYNC110 (a commit publishes no event)
            await anyio.sleep(0.05)
    return rows


async def test_history_over_the_socket_is_the_handles_history(tmp_path: Path) -> None:
    async with served(converging(tmp_path), tmp_path / "s" / "control.sock") as (sup, remote):
        await wait_for(lambda: sup.runners["fizz"].state == "succeeded", timeout=15)
        rows = await finished_rows(remote, "fizz")
        assert [(r.iteration, r.attempt, r.outcome) for r in rows] == [
            (1, 1, "continue"),
            (2, 1, "succeeded"),
        ]
        assert rows == await sup.iterations("fizz")
        assert [r.iteration for r in await remote.iterations("fizz", limit=1)] == [2]

        detail = await remote.iteration("fizz", 2)
        assert detail == await sup.iteration("fizz", 2)  # small: nothing cut
        assert detail.summary.outcome == "succeeded"
        assert detail.prompt.startswith("Do the task. Iteration 2 of")
        assert "check done" in detail.transcript
        assert [(c.name, c.passed) for c in detail.checks] == [("done", True)]
        assert [(c.name, c.passed) for c in (await remote.iteration("fizz", 1)).checks] == [
            ("done", False)
        ]

        with pytest.raises(ControlError, match="no iteration 7"):
            await remote.iteration("fizz", 7)
        with pytest.raises(ControlError, match="start at 1"):
            await remote.iteration("fizz", 0)
        with pytest.raises(ControlError, match="no loop named 'nope'"):
            await remote.iterations("nope")


async def test_a_run_without_a_journal_says_so(tmp_path: Path) -> None:
    sup = Supervisor(converging(tmp_path), exit_when_idle=False)
    with pytest.raises(ControlError, match="keeps no journal"):
        await sup.iterations("fizz")
    with pytest.raises(ControlError, match="keeps no journal"):
        await sup.iteration("fizz", 1)


CHATTY = """
import sys
for i in range(12_000):
    print(f"line {i:05d} of a long build log, with \\x1b[31mcolour\\x1b[0m and a tab\\t.")
print("THE END: the error that matters comes last")
"""


async def test_a_large_transcript_comes_cut_in_the_middle_and_says_so(tmp_path: Path) -> None:
    """~0.8 MB of output, a 64 KiB budget: the line stays within it; the start and the
    end arrive, with the marker between; the handle in-process has all of it."""
    limit = 64 * 1024
    (tmp_path / "w").mkdir()
    config = load(
        tmp_path,
        supervisor_table(1),
        command_agent("chatty", CHATTY),
        loop("big", "chatty", workspace="w", max_iterations=1, done_marker="NEVER-SAID"),
    )
    async with served(config, tmp_path / "s" / "control.sock", detail_max=limit) as (sup, remote):
        await wait_for(lambda: sup.runners["big"].done, timeout=30)
        await finished_rows(remote, "big")
        full = await sup.iteration("big", 1)
        cut = await remote.iteration("big", 1)
    assert len(full.transcript) > 700_000
    assert "line 00000 of a long build log" in cut.transcript
    assert "THE END: the error that matters comes last" in cut.transcript
    assert "line 06000 " not in cut.transcript
    marker = next(line for line in cut.transcript.splitlines() if line.startswith("✂ "))
    assert "bytes of this transcript left out here" in marker
    assert "64 KiB" in marker
    assert "`loopvisor history big --iteration 1`" in marker
    assert cut.prompt == full.prompt
    line = proto.ok(1, bounds.iteration_detail(full, limit))
    assert len(line) <= limit
    assert json.loads(line)["result"]["transcript"] == cut.transcript
    # lines around the cut are whole lines of the original
    before, _, after = cut.transcript.partition(marker)
    assert full.transcript.startswith(before.rstrip("\n"))
    assert full.transcript.endswith(after.lstrip("\n"))


def test_clip_middle_bounds_the_wire_size_whatever_the_text() -> None:
    """Escaped characters count as sent: 6 bytes each for a control character."""
    marker = "✂ {dropped} bytes left out"
    for text in ("\x01" * 50_000, "é" * 50_000, "ab\n" * 50_000, '"\\' * 30_000):
        clipped = bounds.clip_middle(text, 10_000, marker)
        assert bounds.wire_size(clipped) <= 10_000, repr(text[:4])
        assert "bytes left out" in clipped
        head, _, rest = clipped.partition("✂ ")
        tail = rest.partition("\n")[2]
        assert text.startswith(head.rstrip("\n"))
        assert text.endswith(tail)
    assert bounds.clip_middle("short", 10_000, marker) == "short"
