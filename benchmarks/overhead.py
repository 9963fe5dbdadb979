"""Supervision overhead: loopvisor against a bare anyio floor on the same agent streams.

Each case starts N concurrent command agents that print L lines each (`yes | head`),
read twice, back to back, in one run:

* floor: a bare anyio program (`floor.py`) with the same concurrency that reads each
  child's stdout in chunks, writes one JSON line per chunk to its stdout and batches
  SQLite rows (one transaction per 50 ms): the least any supervisor must do;
* loopvisor: `loopvisor run --json --state-dir TMP` on a loops.toml of N loops whose
  command agents print the same lines (one iteration each, journalled, metered).

Both write their JSON lines to a file (their stdout, redirected). Until 2026-12-02 the
floor wrote to /dev/null while loopvisor's lines went to a file (+0.008 s for the floor
at 50x12,000 now that it writes them too), and it ran as this file, whose imports
(`_common`: compileall over the source tree) cost it ~17 ms of CPU a run that no bare
reader pays: that made every ratio look ~5-10% better than it was.

Both are measured by their own CPU time, children excluded (RUSAGE_SELF at exit,
through the wrapper in `_common.py`), their wall time and peak RSS. A `startup` case
(1 agent, 1 line) is measured the same way, so that each ratio is also given
startup-corrected: (loopvisor - its startup) / (floor - its startup), the cost of
the lines alone. `us_per_line` (loopvisor CPU per line, startup-corrected) across
cases shows a cliff: it should stay flat as agents and lines grow.

Metering that scans all of /proc costs more on a busy machine: `--others N` keeps N
sleeping bystander processes alive during the run (`--case AGENTS LINES`, repeatable,
replaces the plan; either keeps the figures out of benchmarks/results/).

Each case runs `--repeat` times (baseline and candidate back to back each time);
figures are medians, ratios the median of the per-repetition ratios.

Prints one JSON object (see `_common.emit`). Run:
`.venv/bin/python benchmarks/overhead.py` (`--quick` for a run under a minute on 2
cores; `--repeat N`). The idle case (agents that only sleep) is `benchmarks/idle.py`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from _common import LOOPVISOR, bystanders, emit, machine, measure, median, metric

LINE = "the agent says something moderately long about the code 0123456789"
MARKER = "moderately long"


def agent_argv(lines: int) -> list[str]:
    return ["sh", "-c", f"yes '{LINE}' | head -n {lines}"]


def loops_toml(agents: int, argv: list[str], marker: str) -> str:
    """N loops of one command agent, one iteration each, ended by `marker` in its output."""
    parts = [
        "[supervisor]",
        f"max_concurrent = {agents}",
        "[agents.talker]",
        'kind = "command"',
        f"command = {json.dumps(argv)}",
    ]
    for i in range(agents):
        parts += [
            "[[loop]]",
            f'name = "a{i:03d}"',
            'agent = "talker"',
            'prompt = "talk"',
            "max_iterations = 1",
            f"done_marker = {json.dumps(marker)}",
            "stuck = { stall = false }",
        ]
    return "\n".join(parts) + "\n"


def once(agents: int, lines: int) -> dict[str, Any]:
    return floor_and_loopvisor(agents, agent_argv(lines), MARKER)


def floor_and_loopvisor(
    agents: int, argv: list[str], marker: str, expect_exit: int = 0
) -> dict[str, Any]:
    """The floor, then loopvisor, on N agents running `argv`, in a fresh temp dir;
    loopvisor must exit `expect_exit` (1 when the marker cannot be seen)."""
    with tempfile.TemporaryDirectory(prefix="lv-bench-") as tmp:
        root = Path(tmp)
        floor_py = str(Path(__file__).resolve().with_name("floor.py"))
        floor_argv = [floor_py, str(agents), str(root / "floor.sqlite3"), *argv]
        floor = measure(floor_argv, root, stdout=root / "floor.jsonl", ok_codes=(0,))
        (root / "loops.toml").write_text(loops_toml(agents, argv, marker))
        lv = measure(
            [*LOOPVISOR, "run", "loops.toml", "--json", "--state-dir", str(root / "state")],
            root,
            stdout=root / "events.jsonl",
            ok_codes=(expect_exit,),
        )
    return {"floor": floor, "loopvisor": lv}


def case(agents: int, lines: int, repeat: int, startup: dict[str, Any]) -> dict[str, Any]:
    runs = [once(agents, lines) for _ in range(repeat)]
    fl = [r["floor"]["cpu_s"] for r in runs]
    lv = [r["loopvisor"]["cpu_s"] for r in runs]
    fl0, lv0 = startup["floor_cpu_s"], startup["loopvisor_cpu_s"]
    corrected = [(b - lv0) / max(a - fl0, 1e-3) for a, b in zip(fl, lv, strict=True)]
    total_lines = agents * lines
    return {
        "name": f"{agents}x{lines}",
        "agents": agents,
        "lines": lines,
        "floor_cpu_s": median(fl),
        "loopvisor_cpu_s": median(lv),
        "floor_wall_s": median([r["floor"]["wall_s"] for r in runs]),
        "loopvisor_wall_s": median([r["loopvisor"]["wall_s"] for r in runs]),
        "floor_peak_rss_mb": median([r["floor"]["peak_rss_mb"] for r in runs]),
        "loopvisor_peak_rss_mb": median([r["loopvisor"]["peak_rss_mb"] for r in runs]),
        "loopvisor_events": runs[0]["loopvisor"]["stdout_lines"],
        "ratio_cpu": median([b / max(a, 1e-3) for a, b in zip(fl, lv, strict=True)]),
        "ratio_cpu_startup_corrected": median(corrected),
        "us_per_line": round(max(median(lv) - lv0, 0) / total_lines * 1e6, 2),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small cases, under a minute")
    parser.add_argument("--repeat", type=int, help="runs per case (default 3, quick 1)")
    parser.add_argument(
        "--others", type=int, default=0, help="sleeping bystander processes during the run"
    )
    parser.add_argument("--case", nargs=2, type=int, metavar=("AGENTS", "LINES"), action="append")
    args = parser.parse_args()
    started = machine()
    repeat = args.repeat or (1 if args.quick else 3)
    if args.quick:
        plan = [(10, 5_000), (10, 20_000), (20, 12_000)]
    else:
        plan = [(10, 10_000), (10, 20_000), (50, 6_000), (50, 12_000)]
    plan = [tuple(c) for c in args.case] if args.case else plan
    with bystanders(args.others):
        boot = [once(1, 1) for _ in range(repeat)]
        startup = {
            "floor_cpu_s": median([b["floor"]["cpu_s"] for b in boot]),
            "loopvisor_cpu_s": median([b["loopvisor"]["cpu_s"] for b in boot]),
        }
        cases = [case(agents, lines, repeat, startup) for agents, lines in plan]
    metrics = [
        metric("startup_cpu", startup["loopvisor_cpu_s"], "s", baseline=startup["floor_cpu_s"])
    ]
    for c in cases:
        target = "<= 2x" if c["name"] in ("50x12000", "10x20000") else None
        metrics += [
            metric(
                f"{c['name']}_cpu",
                c["loopvisor_cpu_s"],
                "s",
                baseline=c["floor_cpu_s"],
                target=target,
            ),
            metric(
                f"{c['name']}_cpu_startup_corrected",
                c["loopvisor_cpu_s"] - startup["loopvisor_cpu_s"],
                "s",
                baseline=c["floor_cpu_s"] - startup["floor_cpu_s"],
            ),
            metric(f"{c['name']}_wall", c["loopvisor_wall_s"], "s", baseline=c["floor_wall_s"]),
            metric(f"{c['name']}_cpu_per_line", c["us_per_line"], "us"),
        ]
    details = {"repeat": repeat, "others": args.others, "startup": startup, "cases": cases}
    emit("overhead", started, metrics, details, save=not (args.case or args.others))


if __name__ == "__main__":
    main()
