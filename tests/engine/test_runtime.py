"""The Supervisor: several loops under one global budget (tokens, USD, CPU, wall) and a
slot limit, the run's summary, and slow subscribers (the operator's control
operations: test_runtime_control.py; step-in: test_runtime_step_in.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import command_agent, load, loop, run_recorded, sim_agent, supervisor_table
from runtime_support import assert_reasons, workspaces

from supervisor import events as ev

pytestmark = pytest.mark.anyio


# -- global budget, slots, summary -------------------------------------------------
async def test_global_token_budget_exhausts_every_loop(tmp_path: Path) -> None:
    names = ["a", "b", "c", "d"]
    workspaces(tmp_path, *names)
    config = load(
        tmp_path,
        supervisor_table(max_concurrent=4, tokens=1000),
        sim_agent("chatty", reply_tokens=120, converge_after=99),
        *(loop(n, "chatty", workspace=n, done_marker="DONE", max_iterations=50) for n in names),
    )
    rec = await run_recorded(config)
    assert rec.summary is not None
    assert rec.summary.exit_code == 2
    assert [r.state for r in rec.summary.loops] == ["exhausted"] * 4, rec.summary.loops
    for r in rec.summary.loops:
        assert "global" in r.reason, r
    stats = rec.supervisor.ledger.statistics()
    assert stats.tokens_spent <= 1000
    assert stats.overshoot_tokens == 0
    assert stats.tokens_reserved == 0
    assert rec.summary.tokens == stats.tokens_spent == sum(r.tokens for r in rec.summary.loops)
    assert_reasons(rec)


async def test_global_budget_with_a_prompt_too_big_for_what_is_left(tmp_path: Path) -> None:
    """The last tokens cannot pay for another prompt: the budget is used up for every
    practical purpose, so the loops end exhausted and the run exits 2 (not 1)."""
    workspaces(tmp_path, "a", "b")
    config = load(
        tmp_path,
        supervisor_table(max_concurrent=2, tokens=1000),
        sim_agent("big-prompt", input_tokens=300, reply_tokens=30, converge_after=99),
        loop("a", "big-prompt", workspace="a", done_marker="DONE", max_iterations=50),
        loop("b", "big-prompt", workspace="b", done_marker="DONE", max_iterations=50),
    )
    rec = await run_recorded(config)
    assert rec.summary is not None
    assert [r.state for r in rec.summary.loops] == ["exhausted", "exhausted"]
    assert rec.supervisor.ledger.tokens_spent <= 1000
    assert rec.summary.exit_code == 2
    assert_reasons(rec)


async def test_global_wall_budget_exhausts_every_loop(tmp_path: Path) -> None:
    workspaces(tmp_path, "a", "b")
    config = load(
        tmp_path,
        supervisor_table(wall="700ms"),
        sim_agent("slow", rate=40, reply_tokens=400),
        loop("a", "slow", workspace="a", done_marker="DONE"),
        loop("b", "slow", workspace="b", done_marker="DONE"),
    )
    started = time.monotonic()
    rec = await run_recorded(config)
    assert time.monotonic() - started < 3
    assert rec.summary is not None
    assert rec.summary.exit_code == 2
    assert [r.state for r in rec.summary.loops] == ["exhausted", "exhausted"]
    assert "wall" in rec.summary.reason
    assert_reasons(rec)


SLOT_SCRIPT = (
    "import os, sys, time\n"
    "log = open(sys.argv[1], 'a')\n"
    "log.write(f'start {time.time()} {os.environ[\"LOOPVISOR_LOOP\"]}\\n'); log.flush()\n"
    "time.sleep(0.3)\n"
    "log.write(f'end {time.time()} {os.environ[\"LOOPVISOR_LOOP\"]}\\n'); log.flush()\n"
    "print('DONE')\n"
)


async def test_max_concurrent_caps_agent_turns_at_once(tmp_path: Path) -> None:
    names = [f"l{i}" for i in range(6)]
    workspaces(tmp_path, *names)
    log = tmp_path / "turns.log"
    config = load(
        tmp_path,
        supervisor_table(max_concurrent=2),
        command_agent("worker", SLOT_SCRIPT, str(log)),
        *(loop(n, "worker", workspace=n, done_marker="DONE") for n in names),
    )
    rec = await run_recorded(config, timeout=20)
    assert rec.summary is not None
    assert [r.state for r in rec.summary.loops] == ["succeeded"] * 6
    marks = []
    for line in log.read_text().splitlines():
        kind, stamp, _name = line.split()
        marks.append((float(stamp), 0 if kind == "end" else 1))
    running = peak = 0
    for _stamp, delta in sorted(marks):
        running += 1 if delta else -1
        peak = max(peak, running)
    assert peak == 2
    waiting = [s for s in rec.of(ev.LoopStateChanged) if s.state == "waiting"]
    assert waiting
    assert {w.reason for w in waiting} == {"waiting for a free slot"}
    assert_reasons(rec)


async def test_summary_lists_loops_in_run_order(tmp_path: Path) -> None:
    workspaces(tmp_path, "slow", "fast", "mid")
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("s", rate=200, reply_tokens=20, converge_after=3, done_text="DONE"),
        sim_agent("f", converge_after=1, done_text="DONE"),
        loop("slow", "s", workspace="slow", done_marker="DONE"),
        loop("fast", "f", workspace="fast", done_marker="DONE"),
        loop("mid", "s", workspace="mid", done_marker="DONE", max_iterations=1),
    )
    rec = await run_recorded(config)
    assert rec.summary is not None
    assert [r.name for r in rec.summary.loops] == ["slow", "fast", "mid"]
    assert [(r.state, r.iterations) for r in rec.summary.loops] == [
        ("succeeded", 3),
        ("succeeded", 1),
        ("failed", 1),
    ]
    ended = [s.loop for s in rec.of(ev.LoopStateChanged) if s.state in ev.END_STATES]
    assert ended.index("fast") < ended.index("slow")  # finished first, listed second
    assert rec.summary.exit_code == 1
    assert isinstance(rec.events[0], ev.RunStarted)
    assert rec.events[0].loops == ("slow", "fast", "mid")
    assert rec.events[-1] is rec.summary
    assert_reasons(rec)


async def test_global_usd_budget_ends_the_run_with_exit_2(tmp_path: Path) -> None:
    workspaces(tmp_path, "a", "b")
    config = load(
        tmp_path,
        supervisor_table(usd=0.5),
        sim_agent("pricey", reply_tokens=100, converge_after=99, usd_per_mtok=1000.0),
        loop("a", "pricey", workspace="a", done_marker="DONE", max_iterations=50),
        loop("b", "pricey", workspace="b", done_marker="DONE", max_iterations=50),
    )
    rec = await run_recorded(config)
    assert rec.summary is not None
    assert rec.summary.exit_code == 2
    assert [r.state for r in rec.summary.loops] == ["exhausted", "exhausted"]
    assert rec.summary.usd <= 0.5 + 1e-9
    assert_reasons(rec)


async def test_global_cpu_budget_ends_the_run_with_exit_2(tmp_path: Path) -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass"
    workspaces(tmp_path, "a", "b")
    config = load(
        tmp_path,
        supervisor_table(cpu="500ms"),
        command_agent("burner", burn),
        loop("a", "burner", workspace="a", done_marker="DONE", max_iterations=20),
        loop("b", "burner", workspace="b", done_marker="DONE", max_iterations=20),
    )
    rec = await run_recorded(config)
    assert rec.summary is not None
    assert rec.summary.exit_code == 2
    assert [r.state for r in rec.summary.loops] == ["exhausted", "exhausted"]
    assert "cpu" in rec.summary.reason
    assert rec.supervisor.ledger.cpu_spent >= 0.5
    assert_reasons(rec)


async def test_a_slow_subscriber_loses_events_but_is_told_how_many() -> None:
    from supervisor.bus import EventBus

    bus = EventBus()
    seen_by_sink: list[ev.Event] = []
    bus.add_sink(seen_by_sink.append)
    notices = [ev.Notice(message=str(i)) for i in range(6)]
    async with bus.subscribe(max_buffer=2) as events:
        for notice in notices[:5]:
            bus.publish(notice)  # never blocks, even though nobody reads
        first = [await events.receive(), await events.receive()]
        bus.publish(notices[5])
        rest = [await events.receive(), await events.receive()]
    assert seen_by_sink == notices  # sinks are lossless
    assert first == notices[:2]
    assert isinstance(rest[0], ev.EventsDropped)
    assert rest[0].count == 3
    assert rest[1] is notices[5]
    stats = bus.statistics()
    assert (stats.published, stats.dropped, stats.subscribers) == (6, 3, 0)
