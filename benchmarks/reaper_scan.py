"""Cost of the end-of-group leftover scan (`reaper.tagged`) with many loops running.

Starts `--loops` tagged process groups (each a shell with a background child, as an
agent with a helper would be), then times one scan for one group's tag, the way
`GroupProcess` does when a turn or check ends:

* scan: `reaper.tagged` (raw /proc/PID/environ reads, parsed only when they match);
* psutil_environ: `psutil.process_iter()` and `environ()` of every process (what the
  leftover scan before `--resume` did);
* children: `psutil.Process().children(recursive=True)` alone (the ppid walk the kill
  did before tagging, for scale);
* reap_adopted: the zombie check every group end makes as a subreaper.

Prints one JSON object (medians and p95 in milliseconds, process counts). Run:
`.venv/bin/python benchmarks/reaper_scan.py` (`--loops N`, `--repeat N`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import psutil

from supervisor import reaper


def timed(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 3),
        "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 3),
    }


def psutil_environ() -> list[int]:
    found = []
    for proc in psutil.process_iter():
        try:
            if reaper.PROC_ENV in proc.environ():
                found.append(proc.pid)
        except psutil.Error:
            pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loops", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    subreaper = reaper.become_subreaper()
    groups = []
    for n in range(args.loops):
        tag = reaper.unique_tag(reaper.proc_tag("bench", f"loop{n}", 1, "turn"))
        groups.append(
            subprocess.Popen(
                ["sh", "-c", "sleep 60 & exec sleep 60"],
                env={**os.environ, reaper.PROC_ENV: tag},
                start_new_session=True,
            )
        )
    try:
        deadline = time.monotonic() + 10
        while len(psutil.Process().children(recursive=True)) < 2 * args.loops:
            if time.monotonic() > deadline:
                sys.exit("the benchmark's process groups did not start")
            time.sleep(0.01)
        last = reaper.has_tag(f"bench/loop{args.loops - 1}/1/turn#{args.loops}")
        found = reaper.tagged(last)
        result = {
            "benchmark": "reaper_scan",
            "python": platform.python_version(),
            "subreaper": subreaper,
            "loops": args.loops,
            "processes_on_machine": len(psutil.pids()),
            "our_descendants": len(psutil.Process().children(recursive=True)),
            "found_for_one_group": len(found),
            "scan": timed(lambda: reaper.tagged(last), args.repeat),
            "psutil_environ": timed(psutil_environ, args.repeat),
            "children": timed(lambda: psutil.Process().children(recursive=True), args.repeat),
            "reap_adopted": timed(reaper.reap_adopted, args.repeat),
        }
    finally:
        for proc in groups:
            os.killpg(proc.pid, 9)
            proc.wait()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
