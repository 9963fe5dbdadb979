"""Idle cost: the supervisor's own CPU while 50 command agents only sleep.

N agents run `sleep S` at once (default 50 x 10 s), under `loopvisor run --json`
and under the bare anyio floor of `overhead.py` (which waits on the same children
and does nothing else), back to back, each measured as a child with its own CPU
(children excluded). Nothing is printed while they sleep, so what loopvisor spends
is supervision: metering, stuck timers, the journal. The figure is CPU per 10 s of
wall time (target: <= 1 s for 50 agents), the run's startup included (`startup` is
given: loopvisor with 1 agent running `true`).

Prints one JSON object (see `_common.emit`). Run: `.venv/bin/python
benchmarks/idle.py` (`--agents N`, `--seconds S`, `--repeat N`; `--quick`: 5 s once).
"""

from __future__ import annotations

import argparse

from _common import emit, machine, median, metric
from overhead import floor_and_loopvisor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run of 5 s")
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--seconds", type=float, help="how long each agent sleeps (10)")
    parser.add_argument("--repeat", type=int, help="runs (default 3, quick 1)")
    args = parser.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 10.0)
    repeat = args.repeat or (1 if args.quick else 3)
    started = machine()
    startup = floor_and_loopvisor(1, ["true"], "NEVER")
    runs = [
        floor_and_loopvisor(args.agents, ["sleep", f"{seconds:g}"], "NEVER") for _ in range(repeat)
    ]

    def per10(side: str) -> float:
        return median([r[side]["cpu_s"] / r[side]["wall_s"] * 10 for r in runs])

    metrics = [
        metric(
            f"idle{args.agents}_cpu_per_10s",
            per10("loopvisor"),
            "s",
            baseline=per10("floor"),
            target="<= 1 s",
        ),
        metric(
            f"idle{args.agents}_cpu",
            median([r["loopvisor"]["cpu_s"] for r in runs]),
            "s",
            baseline=median([r["floor"]["cpu_s"] for r in runs]),
        ),
        metric(
            f"idle{args.agents}_wall",
            median([r["loopvisor"]["wall_s"] for r in runs]),
            "s",
            baseline=median([r["floor"]["wall_s"] for r in runs]),
        ),
        metric(
            "startup_cpu", startup["loopvisor"]["cpu_s"], "s", baseline=startup["floor"]["cpu_s"]
        ),
    ]
    details = {"agents": args.agents, "sleep_s": seconds, "startup": startup, "runs": runs}
    emit("idle", started, metrics, details)


if __name__ == "__main__":
    main()
