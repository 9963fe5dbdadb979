"""Idle cost: the supervisor's own CPU while 50 command agents only sleep.

N agents run `sleep S` at once (default 50 x 10 s), under `loopvisor run --json`
and under the bare anyio floor (`floor.py`, which waits on the same children
and does nothing else), back to back, each measured as a child with its own CPU
(children excluded). Nothing is printed while they sleep, so what loopvisor spends
is supervision: metering, stuck timers, the journal. The figure is CPU per 10 s of
wall time (target: <= 1 s for 50 agents), the run's startup included (`startup` is
given: loopvisor with 1 agent running `true`).

Metering cost grows with every process on the machine, not only the run's, so each
point is run with a number of sleeping bystander processes (`--others`, default 0
and 1,000): a supervisor whose cost follows them is scanning all of /proc.

Prints one JSON object (see `_common.emit`). Run: `.venv/bin/python
benchmarks/idle.py` (`--agents N`, `--seconds S`, `--repeat N`, `--others N...`;
`--quick`: 5 s once, 0 and 500 others).
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import bystanders, emit, machine, median, metric
from overhead import floor_and_loopvisor


def point(agents: int, seconds: float, others: int, repeat: int) -> dict[str, Any]:
    with bystanders(others):
        runs = [
            floor_and_loopvisor(agents, ["sleep", f"{seconds:g}"], "NEVER", expect_exit=1)
            for _ in range(repeat)
        ]

    def per10(side: str) -> float:
        return median([r[side]["cpu_s"] / r[side]["wall_s"] * 10 for r in runs])

    return {
        "other_processes": others,
        "loopvisor_cpu_per_10s": per10("loopvisor"),
        "floor_cpu_per_10s": per10("floor"),
        "loopvisor_cpu_s": median([r["loopvisor"]["cpu_s"] for r in runs]),
        "floor_cpu_s": median([r["floor"]["cpu_s"] for r in runs]),
        "loopvisor_wall_s": median([r["loopvisor"]["wall_s"] for r in runs]),
        "floor_wall_s": median([r["floor"]["wall_s"] for r in runs]),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run of 5 s per point")
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--seconds", type=float, help="how long each agent sleeps (10)")
    parser.add_argument("--repeat", type=int, help="runs per point (default 3, quick 1)")
    parser.add_argument(
        "--others",
        type=int,
        nargs="+",
        help="sleeping bystander processes per point (default 0 1000, quick 0 500)",
    )
    args = parser.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 10.0)
    repeat = args.repeat or (1 if args.quick else 3)
    others = args.others or ([0, 500] if args.quick else [0, 1000])
    started = machine()
    startup = floor_and_loopvisor(1, ["true"], "NEVER", expect_exit=1)
    points = [point(args.agents, seconds, n, repeat) for n in others]
    metrics = []
    for p in points:
        name = f"idle{args.agents}" + (
            f"_with_{p['other_processes']}_others" if p["other_processes"] else ""
        )
        metrics += [
            metric(
                f"{name}_cpu_per_10s",
                p["loopvisor_cpu_per_10s"],
                "s",
                baseline=p["floor_cpu_per_10s"],
                target="<= 1 s",
            ),
            metric(f"{name}_cpu", p["loopvisor_cpu_s"], "s", baseline=p["floor_cpu_s"]),
            metric(f"{name}_wall", p["loopvisor_wall_s"], "s", baseline=p["floor_wall_s"]),
        ]
    metrics.append(
        metric(
            "startup_cpu", startup["loopvisor"]["cpu_s"], "s", baseline=startup["floor"]["cpu_s"]
        )
    )
    details = {"agents": args.agents, "sleep_s": seconds, "startup": startup, "points": points}
    default = args.agents == 50 and args.seconds is None and args.others is None
    emit("idle", started, metrics, details, save=default)


if __name__ == "__main__":
    main()
