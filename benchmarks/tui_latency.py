"""Keypress-to-screen latency of the console under load, and a 1,000-loop table.

    .venv/bin/python benchmarks/tui_latency.py [--presses 100] [--seconds 8] [--quick]

Runs the real app (`tui.app.LoopvisorApp`) over a real in-process Supervisor of sim
agents, headless (`App.run_test`, 160x48), in three scenarios, and prints JSON:

- `idle64`: the baseline: 64 loops in the table, none streaming (rate 0.01 tok/s).
- `stream64`: 64 loops streaming 50 tokens/s each, all at once (long replies, no
  budget pressure): ~1,300 output events/s into the console.
- `table1000`: 1,000 loops: time until the table has them all (build), the cost of
  each 4 Hz table update (`LoopTable.show`), and key latency with 1,000 rows.

Method (latency): a key (`down`/`up`, moving the table cursor, which also switches
the transcript to that loop) is posted to the app's driver exactly as a terminal
key would arrive; t0 is taken just before. Every frame the compositor produces is
timestamped by wrapping `App._display` (headless Textual still composes every frame;
the wrapper also encodes it to terminal sequences, as the real driver would, so that
cost is included). The latency of a press is the time from t0 to the first frame
in which the table cursor is on the new row AND the transcript shows the new loop.
Presses are spaced 30-80 ms apart (random, seeded), so they never queue up.

Frames dropped: the console flushes transcripts on a 15 Hz timer and Textual skips
ticks the event loop was too late for; `flush_ticks` vs `flush_expected` gives the
dropped flushes. `loop_lag_ms` is how late a 5 ms sleep wakes up (event-loop
saturation). `frames_per_s` and `bytes_per_s` are what a terminal would receive.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import RenderableType  # noqa: E402
from textual import events  # noqa: E402
from textual._compositor import CompositorUpdate  # noqa: E402
from textual.screen import Screen  # noqa: E402

from supervisor.config.load import load_config  # noqa: E402
from supervisor.runtime import Supervisor  # noqa: E402
from supervisor.spec import Config  # noqa: E402
from tui.app import LoopvisorApp  # noqa: E402
from tui.screens.main import MainScreen  # noqa: E402

SIZE = (160, 48)


def make_config(directory: Path, loops: int, rate: float, reply_tokens: int) -> Config:
    lines = [
        "[supervisor]",
        f"max_concurrent = {min(loops, 64)}",
        "[agents.sim]",
        'kind = "sim"',
        f"rate = {rate}",
        f"reply_tokens = {reply_tokens}",
        "converge_after = 1000000",
    ]
    for i in range(loops):
        lines += [
            "[[loop]]",
            f'name = "loop-{i:04d}"',
            'agent = "sim"',
            'prompt = "Write release notes, part $iteration of $max_iterations."',
            "max_iterations = 1000",
            'done_marker = "NEVER-SAID"',
            'on_stuck = "continue"',
            'stuck = { stall = "1h" }',
        ]
    path = directory / "loops.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_config(path, state_dir=directory / ".state")


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary_ms(values: list[float]) -> dict[str, float | int | None]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50": round(pct(ms, 0.50) or 0, 2),
        "p95": round(pct(ms, 0.95) or 0, 2),
        "max": round(max(ms), 2) if ms else None,
        "mean": round(statistics.fmean(ms), 2) if ms else None,
    }


class Probe:
    """Timestamps every frame the app composes, with the state it showed."""

    def __init__(self, app: LoopvisorApp) -> None:
        self.app = app
        self.frames: list[tuple[float, int, str | None]] = []
        self.bytes = 0
        self.flush_ticks = 0
        original_display = app._display
        original_tick = app._tick

        def display(screen: Screen[Any], renderable: RenderableType | None) -> None:
            original_display(screen, renderable)
            if isinstance(renderable, CompositorUpdate):
                self.bytes += len(renderable.render_segments(app.console))
            main = app.main
            if main is not None and main.is_mounted:
                row = main.table.cursor_row
                self.frames.append((time.perf_counter(), row, main.transcript.source))

        def tick() -> None:
            self.flush_ticks += 1
            original_tick()

        # Textual's private methods wrapped on this one instance, to time frames:
        app._display = display  # type: ignore[method-assign]
        app._tick = tick  # type: ignore[method-assign]


async def lag_monitor(samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(0.005)
        samples.append(time.perf_counter() - start - 0.005)


async def until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    end = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > end:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


async def press_latencies(
    app: LoopvisorApp, probe: Probe, presses: int, rng: random.Random, span: int = 12
) -> tuple[list[float], int]:
    main = app.main
    assert isinstance(main, MainScreen)
    table = main.table
    table.focus()
    await asyncio.sleep(0.2)
    driver = app._driver
    assert driver is not None
    latencies: list[float] = []
    timeouts = 0
    direction = 1
    for _ in range(presses):
        row = table.cursor_row
        if row + direction < 0 or row + direction >= min(span, len(table.order)):
            direction = -direction
        target = row + direction
        loop = table.order[target]
        seen = len(probe.frames)
        key = events.Key("down" if direction > 0 else "up", None)
        key.set_sender(app)
        t0 = time.perf_counter()
        driver.send_message(key)
        deadline = t0 + 2.0
        latency = None
        while latency is None and time.perf_counter() < deadline:
            await asyncio.sleep(0.0005)
            for t, cursor, source in probe.frames[seen:]:
                if cursor == target and source == loop:
                    latency = t - t0
                    break
        if latency is None:
            timeouts += 1
        else:
            latencies.append(latency)
        await asyncio.sleep(rng.uniform(0.03, 0.08))
    return latencies, timeouts


async def scenario(
    name: str, loops: int, rate: float, reply_tokens: int, presses: int, seconds: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp), loops, rate, reply_tokens)
        supervisor = Supervisor(config, exit_when_idle=False)
        published = 0

        def count(_: object) -> None:
            nonlocal published
            published += 1

        supervisor.add_sink(count)
        snapshots: list[float] = []
        take_snapshot = supervisor.snapshot

        async def timed_snapshot(**kwargs: Any) -> Any:
            t = time.perf_counter()
            result = await take_snapshot(**kwargs)
            snapshots.append(time.perf_counter() - t)
            return result

        supervisor.snapshot = timed_snapshot  # type: ignore[method-assign]  # timed, this instance
        app = LoopvisorApp(supervisor, title=name, run_supervisor=supervisor.run)
        probe = Probe(app)
        shows: list[float] = []
        result: dict[str, Any] = {"loops": loops, "tokens_per_s_per_loop": rate}
        started = time.perf_counter()
        async with app.run_test(size=SIZE) as pilot:
            main = app.main
            assert isinstance(main, MainScreen)
            await until(lambda: len(main.table.order) == loops)
            built = time.perf_counter()
            await until(lambda: bool(probe.frames) and probe.frames[-1][0] > built)
            result["table_build_ms"] = round((time.perf_counter() - started) * 1000, 1)
            original_show = main.table.show

            def timed_show(*args: Any, **kw: Any) -> list[tuple[str, str]]:
                t = time.perf_counter()
                changed = original_show(*args, **kw)
                shows.append(time.perf_counter() - t)
                return changed

            main.table.show = timed_show  # type: ignore[method-assign]  # timed, this instance
            await asyncio.sleep(2.0)  # warm up: every loop is going
            stop = asyncio.Event()
            lag: list[float] = []
            monitor = asyncio.create_task(lag_monitor(lag, stop))
            frames0, bytes0, ticks0, events0 = (
                len(probe.frames),
                probe.bytes,
                probe.flush_ticks,
                published,
            )
            t_start, cpu_start = time.perf_counter(), time.process_time()
            await asyncio.sleep(seconds)  # steady state, no keys
            elapsed = time.perf_counter() - t_start
            steady = {
                "cpu_share": round((time.process_time() - cpu_start) / elapsed, 3),
                "events_per_s": round((published - events0) / elapsed, 1),
                "frames_per_s": round((len(probe.frames) - frames0) / elapsed, 1),
                "bytes_per_s": round((probe.bytes - bytes0) / elapsed),
                "flush_expected": round(elapsed * 15),
                "flush_ticks": probe.flush_ticks - ticks0,
            }
            latencies, timeouts = await press_latencies(app, probe, presses, random.Random(7))
            stop.set()
            await monitor
            result.update(steady)
            result.update(
                {
                    "key_latency_ms": summary_ms(latencies),
                    "key_timeouts": timeouts,
                    "loop_lag_ms": summary_ms(lag),
                    "table_show_ms": summary_ms(shows),
                    "core_snapshot_ms": summary_ms(snapshots[-50:]),
                }
            )
            result["flush_dropped"] = max(0, result["flush_expected"] - result["flush_ticks"])
            await supervisor.shutdown()
            await until(lambda: app.run_done)
            await pilot.pause()
        await supervisor.aclose()
        return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presses", type=int, default=None, help="keys per scenario (100)")
    parser.add_argument("--seconds", type=float, default=None, help="steady-state window (8)")
    parser.add_argument(
        "--quick", action="store_true", help="20 presses, 2 s windows (`make bench-quick`)"
    )
    args = parser.parse_args()
    if args.presses is None:
        args.presses = 20 if args.quick else 100
    if args.seconds is None:
        args.seconds = 2.0 if args.quick else 8.0
    report: dict[str, Any] = {
        "terminal": f"{SIZE[0]}x{SIZE[1]} headless (frames encoded to terminal sequences)",
        "method": "t0 before posting the key to the driver; latency = first composed frame "
        "showing the new cursor row and the new loop's transcript",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    report["idle64"] = await scenario("idle64", 64, 0.01, 50, args.presses, args.seconds)
    report["stream64"] = await scenario("stream64", 64, 50, 5000, args.presses, args.seconds)
    report["table1000"] = await scenario(
        "table1000", 1000, 0.01, 50, max(20, args.presses // 3), args.seconds
    )
    p95 = report["stream64"]["key_latency_ms"]["p95"]
    report["target"] = {"stream64_key_latency_p95_ms_below": 50, "met": p95 < 50}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
