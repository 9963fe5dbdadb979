"""What one CPU-metering tick costs: our /proc scan against psutil, and against the
old per-group sampling (psutil `children(recursive=True)` per group, each a /proc scan).

Starts G sleeping process groups (`sleep 60`, each in its own session, as
`GroupProcess` starts them), then times, in this process:

* scan_direct: `cpumeter._scan()` (list /proc, read each `stat` once);
* scan_psutil: `psutil.process_iter(["cpu_times"])` plus `os.getsid` per process,
  the same information through psutil;
* tick_shared: `CpuMeter.tick()` with all G groups registered (one scan for all);
* refresh_known: `CpuMeter.refresh_known()`, the 5 Hz re-read of the known members
  of every group (their leaders, here; an agent with children has a few more);
* old_per_group: what one old 5 Hz sample of every group cost (G psutil scans).

Prints one JSON object: {"benchmark": "cpumeter_scan", "processes", "groups",
"results": [{"name", "value", "unit", "baseline", "ratio"}]}. Run:
`.venv/bin/python benchmarks/cpumeter_scan.py [--groups 50] [--quick]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable

import psutil

from supervisor import cpumeter


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of one call of `fn` over `repeat` calls."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def scan_psutil() -> None:
    for proc in psutil.process_iter(["cpu_times"]):
        with contextlib.suppress(OSError):
            os.getsid(proc.pid)


def old_per_group(leaders: list[int]) -> None:
    for pid in leaders:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                proc.cpu_times()
        except psutil.Error:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeat = 5 if args.quick else 21
    children = [
        subprocess.Popen(["sleep", "60"], start_new_session=True) for _ in range(args.groups)
    ]
    try:
        leaders = [p.pid for p in children]
        meter = cpumeter.CpuMeter()
        for pid in leaders:
            meter.add(pid)
        direct = timed(lambda: list(cpumeter._scan()), repeat)
        via_psutil = timed(scan_psutil, repeat)
        tick = timed(meter.tick, repeat)
        refresh = timed(meter.refresh_known, repeat)
        old = timed(lambda: old_per_group(leaders), max(3, repeat // 4))
        processes = len(psutil.pids())
    finally:
        for child in children:
            child.kill()
            child.wait()
    ms = 1000.0
    results = [
        {
            "name": "scan_direct",
            "value": round(direct * ms, 3),
            "unit": "ms",
            "baseline": round(via_psutil * ms, 3),
            "ratio": round(direct / via_psutil, 3),
        },
        {"name": "scan_psutil", "value": round(via_psutil * ms, 3), "unit": "ms"},
        {
            "name": "tick_shared",
            "value": round(tick * ms, 3),
            "unit": "ms",
            "baseline": round(old * ms, 3),
            "ratio": round(tick / old, 4),
        },
        {"name": "old_per_group", "value": round(old * ms, 3), "unit": "ms"},
        {"name": "refresh_known", "value": round(refresh * ms, 3), "unit": "ms"},
        {
            "name": "tick_shared_per_s_at_1hz",
            "value": round((tick / cpumeter.SCAN_S + refresh / cpumeter.FAST_S) * ms, 3),
            "unit": "ms CPU/s",
            "baseline": round(old * ms * 5, 3),
            "ratio": round((tick / cpumeter.SCAN_S + refresh / cpumeter.FAST_S) / (old * 5), 4),
        },
    ]
    print(
        json.dumps(
            {
                "benchmark": "cpumeter_scan",
                "processes": processes,
                "groups": args.groups,
                "loadavg": [round(x, 2) for x in os.getloadavg()],
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
