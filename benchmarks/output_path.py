"""Output path: the supervisor's CPU per line of agent output, against the bare floor.

`overhead.py` compares whole runs, whose fixed costs (imports, config, journal setup,
process start and exit) hide what each line costs. This benchmark runs the same cases
(`overhead.case`: N command agents printing L lines each, floor and `loopvisor run
--json` back to back) for several L, and fits CPU = fixed + per_line * lines to each
side: `per_line` is the output path's cost, its ratio to the floor's is the overhead
that grows with output. `linearity` is the slope over the last step of L divided by
the slope over the first: about 1 when the cost is linear in lines, far above 1 at a
cliff (the event loop starved, pipes not drained).

Prints one JSON object: {"benchmark": "output_path", "results": [{"name", "value",
"unit", "baseline"?, "ratio"?}], "points": [...]}. Run:
`.venv/bin/python benchmarks/output_path.py` (`--quick`: under a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def step_slope(points: Sequence[tuple[float, float]], first: int) -> float:
    (x0, y0), (x1, y1) = points[first], points[first + 1]
    return (y1 - y0) / (x1 - x0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small cases, under a minute")
    args = parser.parse_args()
    agents, lines = (10, [5_000, 20_000, 40_000]) if args.quick else (50, [3_000, 12_000, 48_000])
    points = [overhead.once(agents, n) for n in lines]
    total = [agents * n for n in lines]
    floor = [(t, p["floor"]["cpu_s"]) for t, p in zip(total, points, strict=True)]
    lv = [(t, p["loopvisor"]["cpu_s"]) for t, p in zip(total, points, strict=True)]
    floor_us, lv_us = slope(floor) * 1e6, slope(lv) * 1e6
    results: list[dict[str, Any]] = [
        {"name": "floor_cpu_per_line", "value": round(floor_us, 3), "unit": "us/line"},
        {
            "name": "loopvisor_cpu_per_line",
            "value": round(lv_us, 3),
            "unit": "us/line",
            "baseline": round(floor_us, 3),
            "ratio": round(lv_us / max(floor_us, 1e-9), 2),
        },
        {
            "name": "loopvisor_linearity",
            "value": round(step_slope(lv, -2) / max(step_slope(lv, 0), 1e-12), 2),
            "unit": "last step slope / first step slope",
        },
    ]
    print(
        json.dumps(
            {
                "benchmark": "output_path",
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_avg": [round(v, 2) for v in os.getloadavg()],
                "agents": agents,
                "line_bytes": len(overhead.LINE) + 1,
                "results": results,
                "points": [
                    {
                        "lines": n,
                        "floor_cpu_s": p["floor"]["cpu_s"],
                        "loopvisor_cpu_s": p["loopvisor"]["cpu_s"],
                        "loopvisor_wall_s": p["loopvisor"]["wall_s"],
                        "loopvisor_peak_rss_mb": p["loopvisor"]["peak_rss_mb"],
                    }
                    for n, p in zip(lines, points, strict=True)
                ],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
