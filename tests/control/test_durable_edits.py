"""Operator edits are the run's state, not only a line in its log: `ctl edit` (prompt,
max_iterations, limits) and `ctl budget` (the global limits) show in the journal's
`status --json` and survive a kill -9 of `serve` followed by `serve --resume`, also for
a loop edited while it had ended and then restarted.

The defect: they were journalled only as a `control` record with a description, so
the journal's status kept the config's values and a resumed run went back to them.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from daemon import Daemon, kill_daemon, lv, poll, sim_loops_toml, start_daemon
from helpers import wait_gone

pytestmark = pytest.mark.timeout(180)

EDITED = "Edited plan, iteration $iteration."


def journal_status(d: Daemon) -> dict[str, Any]:
    """`loopvisor status --json`: the run as the journal has it."""
    r = lv("status", "--json", "--state-dir", d.state, cwd=d.cwd)
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def loop_of(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(x for x in status["loops"] if x["name"] == name)


def edited(status: dict[str, Any]) -> bool:
    """Every edit of the test is in `status` (either view: they have one shape)."""
    l0, l1 = loop_of(status, "l0"), loop_of(status, "l1")
    return (
        l0["prompt"] == EDITED
        and l0["max_iterations"] == 999
        and l0["limits"]["tokens"] == 123_456
        and l0["limits"]["wall"] == 1800.0
        and l1["limits"]["usd"] == 4.5
        and status["budget"]["limits"]["usd"] == 77.0
        and status["budget"]["limits"]["tokens"] is None
    )


def ok(r: Any) -> None:
    assert r.returncode == 0, r.stdout + r.stderr


def test_edits_and_global_limits_survive_kill_9_and_resume(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, sim_loops_toml(tokens=10_000_000))
    try:
        poll(lambda: d.loop("l0")["iteration"] >= 1, what="l0 running")
        ok(d.ctl("edit", "l0", "--prompt", EDITED, "--max-iterations", "999"))
        ok(d.ctl("edit", "l0", "--tokens", "123456", "--wall", "30m"))
        ok(d.ctl("budget", "--usd", "77", "--tokens", "none"))
        # l1 is edited while it has ended, then restarted: the edit stays with it.
        ok(d.ctl("stop", "l1"))
        poll(lambda: d.loop("l1")["state"] == "stopped", what="l1 stopped")
        ok(d.ctl("edit", "l1", "--usd", "4.5"))
        ok(d.ctl("restart", "l1"))
        poll(lambda: d.loop("l1")["state"] != "stopped", what="l1 restarted")
        assert edited(d.status())  # the live view has them at once
        # The journal's view, once the batch with the edits is written.
        poll(lambda: edited(journal_status(d)), what="the edits in the journal's status")
        os.kill(d.pid, signal.SIGKILL)
        assert wait_gone([d.pid], timeout=10) == []
    finally:
        kill_daemon(d.pid)
    resumed = d.resume()
    try:
        after = resumed.status()
        assert edited(after), after
        assert edited(journal_status(resumed))
        # The resumed loop prompts with the edited template.
        poll(lambda: "Edited plan" in _last_prompt(resumed, "l0"), what="l0's edited prompt")
    finally:
        kill_daemon(resumed.pid)


def _last_prompt(d: Daemon, loop: str) -> str:
    r = lv("history", loop, "--json", "--state-dir", d.state, cwd=d.cwd)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    rows = rows.get("iterations", rows) if isinstance(rows, dict) else rows
    if not rows:
        return ""
    last = rows[-1]["iteration"]
    r = lv("history", loop, "--iteration", str(last), "--json", "--state-dir", d.state, cwd=d.cwd)
    assert r.returncode == 0, r.stderr
    return str(json.loads(r.stdout).get("prompt", ""))
