"""Resume: `loopvisor run --resume` of a journal holding 1,000 loops cut by kill -9.

Setup (not timed): `loopvisor run --json` of N sim loops (all at once, a slow
5 tokens/s so that every iteration is still streaming) until every loop has
started iteration 1 and streamed some output, then SIGKILL: a journal with N
unfinished loops and N iterations in flight, as a crash leaves it.

Measured: `loopvisor run --resume --json` on the same state dir and config, as a
child (wall, its own CPU from /proc while it runs, peak RSS):

* `resume_to_run_started`: until the `run_started` line (journal read, leftover
  scan, interrupted iterations settled);
* `resume_to_all_running`: until every one of the N loops has started its
  interrupted iteration again (target < 2 s for 1,000 loops), with the CPU spent so far.

The resumed run is then stopped with SIGTERM (its own exit is not part of the figure).
Prints one JSON object (see `_common.emit`). Run: `.venv/bin/python
benchmarks/resume.py` (`--loops N`, `--repeat N`; `--quick`: 300 loops once).
"""

from __future__ import annotations

import argparse
import signal
import tempfile
from pathlib import Path
from typing import Any

from _common import LOOPVISOR, Running, emit, machine, median, metric


def sim_toml(loops: int) -> str:
    parts = [
        "[supervisor]",
        f"max_concurrent = {loops}",
        "[agents.sim]",
        'kind = "sim"',
        "rate = 5",
        "reply_tokens = 60",
        "converge_after = 3",
        'done_text = "ALL DONE"',
    ]
    for i in range(loops):
        parts += [
            "[[loop]]",
            f'name = "r{i:04d}"',
            'agent = "sim"',
            'prompt = "iteration $iteration"',
            "max_iterations = 3",
            'done_marker = "ALL DONE"',
            "stuck = { stall = false }",
        ]
    return "\n".join(parts) + "\n"


def loops_seen(run: Running, kind: str) -> int:
    lines = run.json_lines()
    return len({e["loop"] for e in lines if e.get("type") == kind and "loop" in e})


def crashed_journal(root: Path, loops: int) -> None:
    """A state dir whose run was SIGKILLed with `loops` iterations in flight."""
    argv = [*LOOPVISOR, "run", "loops.toml", "--json", "--state-dir", str(root / "state")]
    run = Running(argv, root, root / "first.jsonl", {})
    run.wait_for(lambda: loops_seen(run, "output") >= loops, 300, f"{loops} loops streaming")
    run.stop(signal.SIGKILL)


def once(loops: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lv-resume-") as tmp:
        root = Path(tmp)
        (root / "loops.toml").write_text(sim_toml(loops))
        crashed_journal(root, loops)
        argv = [*LOOPVISOR, "run", "loops.toml", "--resume", "--json"]
        run = Running([*argv, "--state-dir", str(root / "state")], root, root / "resumed.jsonl", {})

        def started() -> bool:
            return any(e.get("type") == "run_started" for e in run.json_lines())

        to_started = run.wait_for(started, 120, "run_started")
        to_running = run.wait_for(
            lambda: loops_seen(run, "iteration_started") >= loops, 120, f"{loops} loops running"
        )
        cpu = run.cpu_s()
        rss_kb = run.rss_kb()
        resumed = next(e for e in run.json_lines() if e.get("type") == "run_started")
        run.stop(signal.SIGTERM)
    return {
        "to_run_started_s": round(to_started, 3),
        "to_all_running_s": round(to_running, 3),
        "cpu_to_all_running_s": round(cpu, 3),
        "rss_mb": round(rss_kb / 1024, 1),
        "resumed_flag": resumed.get("resumed"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 loops once: < 60 s")
    parser.add_argument("--loops", type=int, help="loops in the journal (1000, quick 300)")
    parser.add_argument("--repeat", type=int, help="runs (default 3, quick 1)")
    args = parser.parse_args()
    loops = args.loops or (300 if args.quick else 1000)
    repeat = args.repeat or (1 if args.quick else 3)
    started = machine()
    runs = [once(loops) for _ in range(repeat)]
    metrics = [
        metric(f"resume{loops}_to_run_started", median([r["to_run_started_s"] for r in runs]), "s"),
        metric(
            f"resume{loops}_to_all_running",
            median([r["to_all_running_s"] for r in runs]),
            "s",
            target="< 2 s" if loops == 1000 else None,
        ),
        metric(f"resume{loops}_cpu", median([r["cpu_to_all_running_s"] for r in runs]), "s"),
        metric(f"resume{loops}_rss", median([r["rss_mb"] for r in runs]), "MB"),
    ]
    emit("resume", started, metrics, {"loops": loops, "runs": runs}, save=args.loops is None)


if __name__ == "__main__":
    main()
