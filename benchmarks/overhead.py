"""Supervision overhead: loopvisor against a bare anyio floor on the same agent streams.

Each case starts N concurrent command agents that print L lines each (`yes | head`),
read twice in one run:

* floor: a bare anyio program (this file, `--floor`) with the same concurrency that
  reads each child's stdout in chunks, writes one JSON line per chunk and batches
  SQLite rows (one transaction per 50 ms): the least any supervisor must do;
* loopvisor: `loopvisor run --json --state-dir TMP` on a loops.toml of N loops whose
  command agents print the same lines (one iteration each, journalled, metered).

Both are measured by their own CPU time, children excluded (RUSAGE_SELF at exit,
through a small wrapper), their wall time and peak RSS. The `idle` case runs N
agents that only sleep: the supervisor's own CPU while nothing happens.

Prints one JSON object: {"cases": [{"name", "agents", "lines", "floor": {...},
"loopvisor": {...}, "ratio_cpu"}], ...}. Run: `.venv/bin/python benchmarks/overhead.py`
(`--quick` for a run under a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LINE = "the agent says something moderately long about the code 0123456789"
_WRAPPER = (
    "import atexit, json, os, resource, runpy, sys\n"
    "def _report():\n"
    "    ru = resource.getrusage(resource.RUSAGE_SELF)\n"
    "    with open(os.environ['BENCH_RUSAGE'], 'w') as fh:\n"
    "        json.dump({'cpu_s': ru.ru_utime + ru.ru_stime, 'maxrss_kb': ru.ru_maxrss}, fh)\n"
    "atexit.register(_report)\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__') if sys.argv[0].endswith('.py')"
    " else runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
)


def agent_argv(lines: int, sleep: float = 0.0) -> list[str]:
    if sleep:
        return ["sleep", f"{sleep:g}"]
    return ["sh", "-c", f"yes '{LINE}' | head -n {lines}"]


# -- the floor -----------------------------------------------------------------------
async def _floor(agents: int, lines: int, sleep: float, db: Path) -> None:
    import anyio

    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE IF NOT EXISTS events (loop INTEGER, json TEXT)")
    pending: list[tuple[int, str]] = []
    out = open(os.devnull, "w")  # noqa: SIM115, ASYNC230 (devnull never blocks; closed below)

    async def flusher() -> None:
        while True:
            await anyio.sleep(0.05)
            if pending:
                conn.executemany("INSERT INTO events VALUES (?, ?)", pending)
                conn.commit()
                pending.clear()

    async def one(i: int) -> None:
        async with await anyio.open_process(
            agent_argv(lines, sleep), stdin=subprocess.DEVNULL, start_new_session=True
        ) as proc:
            assert proc.stdout is not None
            async for chunk in proc.stdout:
                text = chunk.decode("utf-8", "replace")
                line = json.dumps({"type": "output", "loop": i, "text": text})
                out.write(line + "\n")
                pending.append((i, line))
            await proc.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(flusher)
        async with anyio.create_task_group() as agents_tg:
            for i in range(agents):
                agents_tg.start_soon(one, i)
        tg.cancel_scope.cancel()
    if pending:
        conn.executemany("INSERT INTO events VALUES (?, ?)", pending)
        conn.commit()
    conn.close()
    out.close()


def floor_main(agents: int, lines: int, sleep: float, db: Path) -> None:
    import anyio

    anyio.run(_floor, agents, lines, sleep, db)


# -- measuring a child -----------------------------------------------------------------
def measure(argv: list[str], cwd: Path) -> dict[str, Any]:
    """Run `python -c WRAPPER argv...`: wall, its own CPU (children excluded), peak RSS."""
    report = cwd / f"rusage-{time.monotonic_ns()}.json"
    env = {**os.environ, "BENCH_RUSAGE": str(report)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
        timeout=900,
    )
    wall = time.perf_counter() - started
    if not report.exists() or done.returncode == 3:
        raise SystemExit(f"{argv[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    usage = json.loads(report.read_text())
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(usage["cpu_s"], 3),
        "peak_rss_mb": round(usage["maxrss_kb"] / 1024, 1),
        "exit_code": done.returncode,
    }


def loops_toml(agents: int, lines: int, sleep: float) -> str:
    parts = [
        "[supervisor]",
        f"max_concurrent = {agents}",
        "[agents.talker]",
        'kind = "command"',
        f"command = {json.dumps(agent_argv(lines, sleep))}",
    ]
    marker = "moderately long" if not sleep else "NEVER"
    for i in range(agents):
        parts += [
            "[[loop]]",
            f'name = "a{i:03d}"',
            'agent = "talker"',
            'prompt = "talk"',
            "max_iterations = 1",
            f'done_marker = "{marker}"',
            "stuck = { stall = false }",
        ]
    return "\n".join(parts) + "\n"


def case(name: str, agents: int, lines: int, sleep: float = 0.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lv-bench-") as tmp:
        root = Path(tmp)
        floor = measure(
            [
                str(Path(__file__).resolve()),
                "--floor",
                str(agents),
                str(lines),
                str(sleep),
                str(root / "floor.sqlite3"),
            ],
            root,
        )
        (root / "loops.toml").write_text(loops_toml(agents, lines, sleep))
        lv = measure(
            ["supervisor", "run", "loops.toml", "--json", "--state-dir", str(root / "state")],
            root,
        )
    return {
        "name": name,
        "agents": agents,
        "lines": lines,
        "sleep_s": sleep,
        "floor": floor,
        "loopvisor": lv,
        "ratio_cpu": round(lv["cpu_s"] / max(floor["cpu_s"], 1e-3), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small cases, under a minute")
    parser.add_argument("--floor", nargs=4, metavar=("AGENTS", "LINES", "SLEEP", "DB"))
    args = parser.parse_args()
    if args.floor:
        agents, lines, sleep, db = args.floor
        floor_main(int(agents), int(lines), float(sleep), Path(db))
        return
    if args.quick:
        plan = [
            ("stream", 10, 5_000, 0.0),
            ("stream", 20, 12_000, 0.0),
            ("idle", 20, 0, 3.0),
        ]
    else:
        plan = [
            ("stream", 10, 20_000, 0.0),
            ("stream", 50, 6_000, 0.0),
            ("stream", 50, 12_000, 0.0),
            ("idle", 50, 0, 10.0),
        ]
    cases = [case(*spec) for spec in plan]
    print(
        json.dumps(
            {
                "benchmark": "overhead",
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "self_cpu_at_start_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 3),
                "cases": cases,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
