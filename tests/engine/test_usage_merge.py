"""A turn's usage reports are charged one by one and published merged (`usage_merge`).
Untimed: what is published, and in which order against reservations; the window's
timer is waited for by the event it publishes, never by a sleep."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from helpers import load, loop, run_recorded, sim_agent, supervisor_table

from supervisor import events as ev
from supervisor import usage_merge
from supervisor.transcript import OutputCoalescer
from supervisor.usage_merge import UsageMerger

pytestmark = pytest.mark.anyio


def report(merger: UsageMerger, *, tokens: int = 0, usd: float = 0.0, cpu_s: float = 0.0) -> None:
    merger.add(
        input_tokens=tokens,
        output_tokens=2 * tokens,
        cache_creation_tokens=3 * tokens,
        cache_read_tokens=4 * tokens,
        usd=usd,
        cpu_s=cpu_s,
    )


def test_reports_of_one_window_are_one_event_with_their_sum() -> None:
    published: list[ev.UsageCharged] = []
    merger = UsageMerger(published.append, loop="L", iteration=3, interval=3600.0)
    merger.flush()  # nothing pending: nothing published
    report(merger, tokens=1, usd=0.25, cpu_s=0.5)
    report(merger, tokens=10, usd=0.5, cpu_s=1.0)
    assert published == []
    merger.flush()
    merger.flush()
    assert len(published) == 1
    (event,) = published
    assert (event.loop, event.iteration) == ("L", 3)
    assert (event.input_tokens, event.output_tokens) == (11, 22)
    assert (event.cache_creation_tokens, event.cache_read_tokens) == (33, 44)
    assert (event.usd, event.cpu_s, event.tokens) == (0.75, 1.5, 110)
    report(merger, tokens=5)  # a new window starts from nothing
    merger.flush()
    assert [e.tokens for e in published] == [110, 50]


def test_a_report_after_the_window_closed_publishes_at_once() -> None:
    """The timer may be late on a busy event loop: the next report publishes then."""
    published: list[ev.UsageCharged] = []
    merger = UsageMerger(published.append, loop="L", iteration=1, interval=0.0)
    report(merger, tokens=1)
    assert published == []  # the first report opens the window
    report(merger, tokens=2)
    assert [e.input_tokens for e in published] == [3]


async def test_the_turns_timer_publishes_a_window_no_other_report_closes() -> None:
    """The output coalescer's flusher is the turn's one timer: with no text held, a
    pending usage window wakes it, and it ticks until the window is published."""
    got = anyio.Event()
    published: list[ev.UsageCharged] = []

    def publish(event: ev.UsageCharged) -> None:
        published.append(event)
        got.set()

    merger = UsageMerger(publish, loop="L", iteration=1, interval=0.02)
    coalescer = OutputCoalescer(
        lambda text, stream: None, clock=time.monotonic, interval=0.01, tick=merger.tick
    )
    merger.on_pending = coalescer.wake
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(coalescer.run_flusher)
            await anyio.lowlevel.checkpoint()  # the timer waits for text or usage
            report(merger, tokens=7)
            await got.wait()
            got = anyio.Event()
            report(merger, tokens=8)  # and again, once it has gone back to waiting
            await got.wait()
            tg.cancel_scope.cancel()
    assert [e.input_tokens for e in published] == [7, 8]


async def test_merged_usage_keeps_the_ledger_order_and_the_totals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per iteration: reserved, then the iteration's usage, then released (resume's
    ledger replay reads them in that order), and the published usage adds up to what
    the ledgers were charged report by report."""
    monkeypatch.setattr(usage_merge, "USAGE_INTERVAL_S", 3600.0)
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("sim", rate=0, reply_tokens=60, converge_after=3, done_text="ALL DONE"),
        loop("s", "sim", max_iterations=3, done_marker="ALL DONE", stuck={"stall": False}),
    )
    rec = await run_recorded(config)
    assert rec.summary is not None
    assert rec.summary.exit_code == 0
    booked = [
        (type(e).__name__, e.iteration)
        for e in rec.events
        if isinstance(e, ev.BudgetReserved | ev.UsageCharged | ev.BudgetReleased)
    ]
    assert booked == [
        (kind, n)
        for n in (1, 2, 3)
        for kind in ("BudgetReserved", "UsageCharged", "BudgetReleased")
    ]
    usage = rec.of(ev.UsageCharged)
    ledger = rec.supervisor.ledger
    assert sum(e.tokens for e in usage) == ledger.tokens_spent == rec.result("s").tokens
    assert sum(e.usd for e in usage) == pytest.approx(ledger.usd_spent)
