"""Scaling: the supervisor's own cost as loops, agents and idle loops grow.

Three series, each point a fresh `loopvisor run --json` measured as a child (its own
CPU, children excluded, via the wrapper in `_common.py`):

* sim: N sim loops (default rate 200 tokens/s, 60-token replies, converge at
  iteration 3, `max_iterations = 3`, all at once): wall, supervisor CPU, CPU per
  iteration (target <= 3 ms at 1,000 loops), events/s (JSON lines / wall), peak RSS.
* command: N command agents at once, each printing L lines (`yes | head`): wall,
  supervisor CPU, CPU per line, events/s, peak RSS. Linear means CPU per line stays
  flat as N grows; a cliff shows as CPU per line (and wall) jumping.
* idle: N loops that ran once and wait for their next scheduled run (sim, `schedule
  = "every 10h"`): once every loop says `scheduled`, the supervisor's VmRSS is read
  (until two reads 0.2 s apart agree within 1%), then the run is stopped with
  SIGTERM. RSS per idle loop is the least-squares slope of RSS over N (target < 150
  KB, 1 KB = 1,000 bytes). The same for N loops that never ran, queued behind one
  slot (`max_concurrent = 1`, every agent a `sleep`): `rss_per_queued_loop`.

`peak_rss_per_active_sim_loop` is the slope of the sim series' peak RSS over loops
(streaming, transcripts and journal batches in memory): what 1,000 busy loops cost.

Marginal costs are slopes too: sim CPU over iterations, command CPU over lines, so
that startup does not flatter the large points nor hide a cliff.

Prints one JSON object (see `_common.emit`) and keeps it in benchmarks/results/;
`benchmarks/plot.py` draws the curves from it. Run:
`.venv/bin/python benchmarks/scale.py` (`--quick`: fewer, smaller points, < 60 s).
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import LOOPVISOR, Running, emit, machine, measure, metric, slope
from overhead import agent_argv, loops_toml

SIM_ITERATIONS = 3


def sim_toml(loops: int) -> str:
    parts = [
        "[supervisor]",
        f"max_concurrent = {loops}",
        "[agents.sim]",
        'kind = "sim"',
        "reply_tokens = 60",
        f"converge_after = {SIM_ITERATIONS}",
        'done_text = "ALL DONE"',
    ]
    for i in range(loops):
        parts += [
            "[[loop]]",
            f'name = "s{i:04d}"',
            'agent = "sim"',
            'prompt = "iteration $iteration"',
            f"max_iterations = {SIM_ITERATIONS}",
            'done_marker = "ALL DONE"',
            "stuck = { stall = false }",
        ]
    return "\n".join(parts) + "\n"


def run_point(toml: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lv-scale-") as tmp:
        root = Path(tmp)
        (root / "loops.toml").write_text(toml)
        result = measure(
            [*LOOPVISOR, "run", "loops.toml", "--json", "--state-dir", str(root / "state")],
            root,
            stdout=root / "events.jsonl",
            ok_codes=(0,),
        )
    result["events_per_s"] = round(result["stdout_lines"] / max(result["wall_s"], 1e-3), 1)
    return result


def sim_point(loops: int) -> dict[str, Any]:
    result = run_point(sim_toml(loops))
    iterations = loops * SIM_ITERATIONS
    return {
        "loops": loops,
        "ms_per_iteration": round(result["cpu_s"] / iterations * 1e3, 3),
        **result,
    }


def command_point(agents: int, lines: int) -> dict[str, Any]:
    result = run_point(loops_toml(agents, agent_argv(lines), "moderately long"))
    per_line = result["cpu_s"] / (agents * lines) * 1e6
    return {"agents": agents, "lines": lines, "us_per_line": round(per_line, 2), **result}


def idle_toml(loops: int, kind: str) -> str:
    """`scheduled`: sim loops that ran once and wait 10 h for their next run;
    `queued`: command loops queued behind one slot (every agent a `sleep`, so the one
    that gets the slot keeps it)."""
    if kind == "queued":
        toml = loops_toml(loops + 1, ["sleep", "120"], "NEVER")
        return toml.replace(f"max_concurrent = {loops + 1}", "max_concurrent = 1")
    parts = [
        "[supervisor]",
        "max_concurrent = 50",
        "[agents.sim]",
        'kind = "sim"',
        "rate = 0",
        "converge_after = 1",
        'done_text = "ALL DONE"',
    ]
    for i in range(loops):
        parts += [
            "[[loop]]",
            f'name = "i{i:04d}"',
            'agent = "sim"',
            'prompt = "once"',
            "max_iterations = 1",
            'done_marker = "ALL DONE"',
            'schedule = "every 10h"',
        ]
    return "\n".join(parts) + "\n"


IDLE_SIGN = {"scheduled": ("state", "scheduled"), "queued": ("reason", "waiting for a free slot")}


def idle_point(loops: int, kind: str) -> dict[str, Any]:
    """The supervisor's RSS while it holds `loops` idle loops of `kind`."""
    key, value = IDLE_SIGN[kind]
    with tempfile.TemporaryDirectory(prefix="lv-idle-") as tmp:
        root = Path(tmp)
        (root / "loops.toml").write_text(idle_toml(loops, kind))
        run = Running(
            [*LOOPVISOR, "run", "loops.toml", "--json", "--state-dir", str(root / "state")],
            root,
            root / "events.jsonl",
            {},
        )

        def all_idle() -> bool:
            lines = run.json_lines()
            idle = {e["loop"] for e in lines if e.get("type") == "state" and e.get(key) == value}
            return len(idle) >= loops

        ready_s = run.wait_for(all_idle, 120, f"{loops} {kind} loops")
        previous, rss = -1, run.rss_kb()
        while abs(rss - previous) > rss * 0.01:
            time.sleep(0.2)
            previous, rss = rss, run.rss_kb()
        code = run.stop(signal.SIGTERM)
    return {"idle_loops": loops, "rss_kb": rss, "ready_s": round(ready_s, 3), "exit_code": code}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller points: < 60 s")
    args = parser.parse_args()
    started = machine()
    if args.quick:
        sim_n, cmd_n, cmd_lines, idle_n = [10, 100, 300], [10, 50], 2_000, [1, 250, 500]
    else:
        sim_n, cmd_n, cmd_lines, idle_n = [10, 100, 1000], [10, 50, 200], 2_000, [1, 250, 500, 1000]
    sim = [sim_point(n) for n in sim_n]
    command = [command_point(n, cmd_lines) for n in cmd_n]
    idle = {kind: [idle_point(n, kind) for n in idle_n] for kind in IDLE_SIGN}
    rss_slope_kb = {
        kind: slope([p["idle_loops"] for p in points], [p["rss_kb"] * 1.024 for p in points])
        for kind, points in idle.items()
    }
    sim_rss_slope_kb = slope([p["loops"] for p in sim], [p["peak_rss_mb"] * 1048.576 for p in sim])
    sim_iterations = [p["loops"] * SIM_ITERATIONS for p in sim]
    marginal_ms = slope(sim_iterations, [p["cpu_s"] * 1e3 for p in sim])
    cmd_lines_total = [p["agents"] * p["lines"] for p in command]
    marginal_us = slope(cmd_lines_total, [p["cpu_s"] * 1e6 for p in command])
    metrics = []
    for p in sim:
        target = "<= 3 ms" if p["loops"] == 1000 else None
        metrics += [
            metric(
                f"sim{p['loops']}_cpu_per_iteration", p["ms_per_iteration"], "ms", target=target
            ),
            metric(f"sim{p['loops']}_wall", p["wall_s"], "s"),
            metric(f"sim{p['loops']}_events_per_s", p["events_per_s"], "events/s"),
            metric(f"sim{p['loops']}_peak_rss", p["peak_rss_mb"], "MB"),
        ]
    for p in command:
        name = f"command{p['agents']}x{p['lines']}"
        metrics += [
            metric(f"{name}_cpu", p["cpu_s"], "s"),
            metric(f"{name}_cpu_per_line", p["us_per_line"], "us"),
            metric(f"{name}_wall", p["wall_s"], "s"),
            metric(f"{name}_events_per_s", p["events_per_s"], "events/s"),
            metric(f"{name}_peak_rss", p["peak_rss_mb"], "MB"),
        ]
    metrics += [
        metric("sim_marginal_cpu_per_iteration", marginal_ms, "ms"),
        metric("command_marginal_cpu_per_line", marginal_us, "us"),
        metric("rss_per_idle_loop", rss_slope_kb["scheduled"], "KB", target="< 150 KB"),
        metric("rss_per_queued_loop", rss_slope_kb["queued"], "KB"),
        metric("peak_rss_per_active_sim_loop", sim_rss_slope_kb, "KB"),
    ]
    emit("scale", started, metrics, {"sim": sim, "command": command, "idle": idle})


if __name__ == "__main__":
    main()
