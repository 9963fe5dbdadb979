"""Issue 11, item 10: `status --json` (from the journal) and `ctl status --json` (from
the live supervisor) print one snapshot shape: the same keys for the run, for every
loop and for the budget, with the limits, wall time and CPU both know.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from daemon import kill_daemon, poll, start_daemon
from helpers import loop, run_cli, sim_agent, supervisor_table


def _keys(data: dict[str, Any]) -> tuple[set[str], set[str], set[str]]:
    return set(data), set(data["loops"][0]), set(data["budget"])


def test_status_json_and_ctl_status_json_have_one_shape(tmp_path: Path) -> None:
    toml = "\n".join(
        [
            supervisor_table(3, tokens=50_000, wall="1h"),
            sim_agent("slow", rate=40, reply_tokens=20, converge_after=10_000),
            loop(
                "l0",
                "slow",
                max_iterations=1000,
                done_marker="NEVER",
                budget={"usd": 2.5, "wall": "30m"},
                stuck={"same_output": 0},
            ),
        ]
    )
    d = start_daemon(tmp_path, toml)
    try:
        poll(lambda: d.loop("l0")["iteration"] >= 2, timeout=20, what="two iterations")
        live = d.status()
        r = run_cli("status", "--json", "--state-dir", d.state, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        journal = json.loads(r.stdout)
    finally:
        kill_daemon(d.pid)
    assert _keys(journal) == _keys(live)
    assert journal["live"] is True
    assert live["live"] is True
    (loop0,) = journal["loops"]
    assert loop0["name"] == "l0"
    assert loop0["agent"] == "slow"
    assert loop0["agent_kind"] == "sim"
    assert loop0["limits"] == {"tokens": None, "usd": 2.5, "wall": 1800.0, "cpu": None}
    assert loop0["max_iterations"] == 1000
    assert loop0["tokens"] > 0
    assert loop0["started_at"] is not None
    budget = journal["budget"]
    assert budget["limits"] == {"tokens": 50_000, "usd": None, "wall": 3600.0, "cpu": None}
    assert budget["slots_total"] == 3
    assert budget["wall_s"] > 0
    assert budget["tokens"] == loop0["tokens"]
