"""Journal write rate: batched writer task vs one transaction per event.

Feeds the same synthetic stream (mostly 1-token output deltas from many loops,
interleaved, with the iteration, budget, session, check and state events a real
run emits) to two fresh journals:

* batched: `Journal.record` on the event loop at full speed while `run_writer`
  (the real writer task, default 50 ms / 2000 rows) flushes; the clock stops
  when every event is committed.
* paced: the same writer under a steady, busy-supervisor rate (default 20,000
  events/s, e.g. 100 loops streaming 200 tokens/s): batch write times p50/p95,
  the writer thread's busy fraction, and how far commits trail `record`.
* unbatched baseline: `record` + `flush_now` per event (one transaction each).

Prints one JSON object. Run: `.venv/bin/python benchmarks/journal_write_rate.py`
(`--events N`, `--loops N`, `--baseline-events N`, `--pace-rate R`, `--json-indent N`).
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

from supervisor import events as ev
from supervisor.journal.schema import JOURNAL_NAME
from supervisor.journal.writer import Journal

DELTAS_PER_ITERATION = 400


def synthetic_stream(total: int, loops: int) -> list[ev.Event]:
    """`total` events: loops take turns emitting small slices of their iterations."""
    out: list[ev.Event] = []
    names = [f"loop-{i:02d}" for i in range(loops)]
    iteration = dict.fromkeys(names, 0)
    delta = dict.fromkeys(names, DELTAS_PER_ITERATION)
    words = ["the", " test", " fails", " because", " of", " a", " typo", "\n"]
    turn = 0
    while len(out) < total:
        name = names[turn % loops]
        turn += 1
        n = iteration[name]
        if delta[name] >= DELTAS_PER_ITERATION:
            if n:
                out += [
                    ev.UsageCharged(loop=name, iteration=n, input_tokens=900, output_tokens=400,
                                    usd=0.0087),
                    ev.BudgetReleased(loop=name, iteration=n, tokens=6700, usd=0.05),
                    ev.SessionSaved(loop=name, iteration=n, session_id=f"s-{name}",
                                    last_output="..." * 50, check_output="1 failed"),
                    ev.LoopStateChanged(loop=name, state="checking", reason="checks", iteration=n),
                    ev.CheckStarted(loop=name, iteration=n, name="pytest", command="pytest -q"),
                    ev.CheckFinished(loop=name, iteration=n, name="pytest", passed=False,
                                     exit_code=1, summary="1 failed", output="F" * 400,
                                     duration_s=1.2),
                    ev.IterationFinished(loop=name, iteration=n, outcome="continue",
                                         reason="1 failed", tokens=1300, usd=0.0087,
                                         duration_s=9.5),
                ]  # fmt: skip
            n = iteration[name] = n + 1
            delta[name] = 0
            out += [
                ev.IterationStarted(loop=name, iteration=n, prompt="Make the tests pass. " * 20),
                ev.LoopStateChanged(loop=name, state="running", reason="turn", iteration=n),
                ev.BudgetReserved(loop=name, iteration=n, tokens=8000, usd=0.06),
            ]
            continue
        for _ in range(8):  # a slice of this loop's token stream
            out.append(ev.AgentOutput(loop=name, iteration=n, text=words[delta[name] % 8]))
            delta[name] += 1
        if delta[name] % 100 == 0:
            out.append(ev.ToolCalled(loop=name, iteration=n, tool_id="t", name="run",
                                     input={"cmd": "pytest -q"}))  # fmt: skip
    return out[:total]


async def batched(
    state: Path, stream: list[ev.Event], interval: float, max_batch: int
) -> dict[str, Any]:
    """Full speed: the event loop records as fast as it can, yielding every 500 events."""
    journal = Journal.open(state)
    journal.start_run("bench", state / "loops.toml", "x")
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(journal.run_writer, interval, max_batch)
        for i in range(0, len(stream), 500):
            for event in stream[i : i + 500]:
                journal.record(event)
            await anyio.lowlevel.checkpoint()
        while journal.statistics().pending_events:  # noqa: ASYNC110 (a sync statistic)
            await anyio.sleep(0.001)
        elapsed = time.perf_counter() - started
        tg.cancel_scope.cancel()
    stats = journal.statistics()
    journal.close()
    return {
        "events_per_s_batched": round(len(stream) / elapsed),
        "batched_s": round(elapsed, 3),
        "batches": stats.batches_written,
        "rows_written_batched": stats.rows_written,
        "db_bytes_batched": _db_bytes(state),
    }


async def paced(
    state: Path, stream: list[ev.Event], rate: float, interval: float, max_batch: int
) -> dict[str, Any]:
    """A steady `rate` events/s (a busy supervisor): what each batch costs the writer."""
    journal = Journal.open(state)
    journal.start_run("bench", state / "loops.toml", "x")
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    lags: list[float] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(journal.run_writer, interval, max_batch)
        started = time.perf_counter()
        for n, i in enumerate(range(0, len(stream), per_tick)):
            for event in stream[i : i + per_tick]:
                journal.record(event)
            await anyio.sleep(max(0.0, started + (n + 1) * tick - time.perf_counter()))
            lags.append(journal.statistics().pending_events / rate * 1000.0)
        while journal.statistics().pending_events:  # noqa: ASYNC110 (a sync statistic)
            await anyio.sleep(0.001)
        elapsed = time.perf_counter() - started
        tg.cancel_scope.cancel()
    stats = journal.statistics()
    journal.close()
    lags.sort()
    return {
        "paced_rate": round(len(stream) / elapsed),
        "paced_events": len(stream),
        "paced_batches": stats.batches_written,
        "batch_ms_p50": round(stats.batch_ms_p50, 3),
        "batch_ms_p95": round(stats.batch_ms_p95, 3),
        "batch_ms_max": round(stats.max_batch_ms, 3),
        "writer_busy_fraction": round(stats.write_seconds / elapsed, 3),
        "uncommitted_ms_p95": round(lags[int(0.95 * (len(lags) - 1))], 1) if lags else 0.0,
    }


def unbatched(state: Path, stream: list[ev.Event]) -> dict[str, Any]:
    journal = Journal.open(state)
    journal.start_run("bench", state / "loops.toml", "x")
    started = time.perf_counter()
    for event in stream:
        journal.record(event)
        journal.flush_now()
    elapsed = time.perf_counter() - started
    stats = journal.statistics()
    journal.close()
    return {
        "events_per_s_unbatched_baseline": round(len(stream) / elapsed),
        "baseline_events": len(stream),
        "baseline_s": round(elapsed, 3),
        "rows_written_unbatched": stats.rows_written,
    }


def record_cost(state: Path, stream: list[ev.Event]) -> float:
    """ns per `record()` call on the event loop (no writer running)."""
    journal = Journal.open(state)
    journal.start_run("bench", state / "loops.toml", "x")
    started = time.perf_counter_ns()
    for event in stream:
        journal.record(event)
    per = (time.perf_counter_ns() - started) / len(stream)
    journal.close()
    return per


def _db_bytes(state: Path) -> int:
    with sqlite3.connect(state / JOURNAL_NAME) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return (state / JOURNAL_NAME).stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--loops", type=int, default=20)
    parser.add_argument(
        "--baseline-events",
        type=int,
        default=None,
        help="events for the one-transaction-per-event baseline (default: all)",
    )
    parser.add_argument(
        "--pace-rate",
        type=float,
        default=20_000,
        help="events/s of the paced run that measures batch times",
    )
    parser.add_argument("--pace-events", type=int, default=60_000)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--max-batch", type=int, default=2000)
    parser.add_argument("--json-indent", type=int, default=2)
    args = parser.parse_args()  # fmt: skip

    stream = synthetic_stream(args.events, args.loops)
    mix = Counter(e.type for e in stream)
    baseline_stream = stream[: args.baseline_events or len(stream)]
    result: dict[str, Any] = {
        "events": len(stream),
        "loops": args.loops,
        "mix": dict(mix.most_common()),
        "interval_s": args.interval,
        "max_batch": args.max_batch,
    }
    with tempfile.TemporaryDirectory(prefix="loopvisor-bench-") as tmp:
        root = Path(tmp)
        result.update(anyio.run(batched, root / "batched", stream, args.interval, args.max_batch))
        result.update(
            anyio.run(
                paced,
                root / "paced",
                stream[: args.pace_events],
                args.pace_rate,
                args.interval,
                args.max_batch,
            )
        )
        result.update(unbatched(root / "unbatched", baseline_stream))
        result["record_ns_per_event"] = round(record_cost(root / "record", stream))
    result["speedup"] = round(
        result["events_per_s_batched"] / result["events_per_s_unbatched_baseline"], 1
    )
    result["sqlite"] = sqlite3.sqlite_version
    result["python"] = platform.python_version()
    result["platform"] = platform.platform()
    json.dump(result, sys.stdout, indent=args.json_indent or None)
    print()


if __name__ == "__main__":
    main()
