"""Draw the scaling curves from benchmarks/results/scale.json (and overhead.json).

    .venv/bin/python benchmarks/plot.py [--quick]

Needs matplotlib (the bench-only extra: `pip install -e '.[bench]'`). Writes
benchmarks/results/scale.svg (text, so that a re-run diffs): supervisor CPU against
sim loops and against command agents, RSS against idle loops, and loopvisor's CPU
against the floor for each overhead case. `--quick` reads the `-quick` results.
Prints one JSON object naming what it wrote.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from _common import RESULTS


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="plot the --quick results")
    args = parser.parse_args()
    suffix = "-quick" if args.quick else ""
    scale = load(f"scale{suffix}")
    if scale is None:
        raise SystemExit(f"no {RESULTS}/scale{suffix}.json: run benchmarks/scale.py first")
    overhead = load(f"overhead{suffix}")

    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "loopvisor"  # stable ids: a re-run diffs cleanly
    import matplotlib.pyplot as plt

    details = scale["details"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    sim, cmd = details["sim"], details["command"]

    ax = axes[0][0]
    ax.plot([p["loops"] for p in sim], [p["cpu_s"] for p in sim], "o-", label="CPU (s)")
    ax.plot([p["loops"] for p in sim], [p["wall_s"] for p in sim], "s--", label="wall (s)")
    ax.set(title="sim loops x 3 iterations", xlabel="loops", ylabel="seconds")
    ax.legend()

    ax = axes[0][1]
    lines = cmd[0]["lines"] if cmd else 0
    ax.plot([p["agents"] for p in cmd], [p["cpu_s"] for p in cmd], "o-", label="CPU (s)")
    ax.plot([p["agents"] for p in cmd], [p["wall_s"] for p in cmd], "s--", label="wall (s)")
    ax.set(title=f"command agents x {lines} lines", xlabel="agents", ylabel="seconds")
    ax.legend()

    ax = axes[1][0]
    for kind, points in details["idle"].items():
        xs = [p["idle_loops"] for p in points]
        ax.plot(xs, [p["rss_kb"] / 1024 for p in points], "o-", label=f"{kind} loops")
    ax.set(title="supervisor RSS with idle loops", xlabel="idle loops", ylabel="RSS (MiB)")
    ax.legend()

    ax = axes[1][1]
    if overhead:
        cases = overhead["details"]["cases"]
        at = range(len(cases))
        ax.bar([x - 0.2 for x in at], [c["floor_cpu_s"] for c in cases], 0.4, label="floor")
        ax.bar([x + 0.2 for x in at], [c["loopvisor_cpu_s"] for c in cases], 0.4, label="loopvisor")
        ax.set_xticks(list(at), [c["name"] for c in cases])
        ax.set(title="overhead: CPU, agents x lines", ylabel="CPU (s)")
        ax.legend()
    else:
        ax.set_axis_off()

    machine = scale["machine"]
    fig.suptitle(
        f"loopvisor {machine['commit']} · {machine['date']} · {machine['cpus']} CPUs · "
        f"load {machine['loadavg'][0]}"
    )
    fig.tight_layout()
    out = RESULTS / f"scale{suffix}.svg"
    fig.savefig(out, format="svg", metadata={"Date": None})
    print(json.dumps({"benchmark": "plot", "wrote": str(out.relative_to(RESULTS.parent.parent))}))


if __name__ == "__main__":
    main()
