"""Scaling: the supervisor's own cost as loops, agents and idle loops grow.

Three series, each point a fresh `loopvisor run --json` measured as a child (its own
CPU, children excluded, via the wrapper in `_common.py`):

* sim: N sim loops (default rate 200 tokens/s, 60-token replies, converge at
  iteration 3, `max_iterations = 3`, all at once): wall, supervisor CPU, CPU per
  iteration (target <= 3 ms at 1,000 loops), events/s (JSON lines / wall), peak RSS.
* command: N command agents at once, each printing L lines (`yes | head`): wall,
  supervisor CPU, CPU per line, events/s, peak RSS. Linear means CPU per line stays
  flat as N grows; a cliff shows as CPU per line (and wall) jumping.
* idle: N loops queued behind one slot (`max_concurrent = 1`, every agent a `sleep`
  so whichever gets the slot keeps it): once every other loop says "waiting for a
  free slot", the supervisor's VmRSS is read (until two reads 0.2 s apart agree
  within 1%), then the run is stopped with SIGTERM. RSS per idle loop is the
  least-squares slope of RSS over N (target < 150 KB; main measured ~105 KB).

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
    result["events_per_s"] = round(result["lines"] / max(result["wall_s"], 1e-3), 1)
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


def idle_point(loops: int) -> dict[str, Any]:
    """RSS of a supervisor holding `loops` idle loops (queued for the one slot)."""
    toml = loops_toml(loops + 1, ["sleep", "120"], "NEVER").replace(
        f"max_concurrent = {loops + 1}", "max_concurrent = 1"
    )
    with tempfile.TemporaryDirectory(prefix="lv-idle-") as tmp:
        root = Path(tmp)
        (root / "loops.toml").write_text(toml)
        run = Running(
            [*LOOPVISOR, "run", "loops.toml", "--json", "--state-dir", str(root / "state")],
            root,
            root / "events.jsonl",
            {},
        )

        def all_waiting() -> bool:
            waiting = {
                e["loop"]
                for e in run.json_lines()
                if e.get("type") == "state" and e.get("reason") == "waiting for a free slot"
            }
            return len(waiting) >= loops

        ready_s = run.wait_for(all_waiting, 120, f"{loops} loops waiting for a slot")
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
        sim_n, cmd_n, cmd_lines, idle_n = [10, 100], [10, 50], 1_000, [1, 200, 400]
    else:
        sim_n, cmd_n, cmd_lines, idle_n = [10, 100, 1000], [10, 50, 200], 2_000, [1, 250, 500, 1000]
    sim = [sim_point(n) for n in sim_n]
    command = [command_point(n, cmd_lines) for n in cmd_n]
    idle = [idle_point(n) for n in idle_n]
    rss_slope_kb = slope([p["idle_loops"] for p in idle], [p["rss_kb"] for p in idle])
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
    metrics.append(metric("rss_per_idle_loop", rss_slope_kb, "KB", target="< 150 KB"))
    emit("scale", started, metrics, {"sim": sim, "command": command, "idle": idle})


if __name__ == "__main__":
    main()
