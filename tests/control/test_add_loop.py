"""`loopvisor ctl add NAME --like LOOP`: a new loop started in a running `serve`, made
like one of its loops with its own prompt, max_iterations and limits. It runs and
ends, shows in `ctl status`, `status --json` and `history`, comes back after a kill -9
and `serve --resume`; a worktree loop's copy gets its own worktree and branch; every
refusal says why."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from daemon import Daemon, kill_daemon, lv, poll, sim_loops_toml, start_daemon
from gitrepo import git, make_repo
from helpers import wait_gone
from loops_support import fixer_config

from supervisor.config.load import load_config
from supervisor.worktree import prepare_worktrees

pytestmark = pytest.mark.timeout(180)  # serve twice (one a resume), ~20 CLI processes

ENDED = {"succeeded", "failed", "exhausted", "stopped"}


def journal_loop(d: Daemon, name: str) -> dict[str, Any]:
    """The loop in `loopvisor status --json` (the journal's view); {} if not there."""
    r = lv("status", "--json", "--state-dir", d.state, cwd=d.cwd)
    assert r.returncode == 0, r.stderr
    return next((x for x in json.loads(r.stdout)["loops"] if x["name"] == name), {})


def refused(d: Daemon, *args: str) -> str:
    r = d.ctl("add", *args)
    assert r.returncode == 1, r.stdout + r.stderr
    return r.stderr


def test_ctl_add_runs_a_loop_like_another_that_survives_kill_9(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, sim_loops_toml())
    try:
        r = d.ctl(
            "add", "two", "--like", "l0", "--prompt", "Added, iteration $iteration.",
            "--max-iterations", "2", "--tokens", "50000",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "two: started like l0"

        def two_ended() -> dict[str, Any]:
            row = d.loop("two")
            return row if row["state"] in ENDED else {}

        two = poll(two_ended, 30, "two to end")
        assert two["iteration"] == 2
        assert (two["max_iterations"], two["limits"]["tokens"]) == (2, 50_000)
        assert two["prompt"] == "Added, iteration $iteration."
        assert two["agent"] == "slow"
        history = json.loads(
            lv("history", "two", "--json", "--state-dir", d.state, cwd=d.cwd).stdout
        )
        assert [row["iteration"] for row in history["iterations"]] == [1, 2]
        detail = lv(
            "history", "two", "--iteration", "2", "--json", "--state-dir", d.state, cwd=d.cwd
        )
        assert "Added, iteration 2." in json.loads(detail.stdout)["prompt"]

        # Refusals: each a clear error, nothing started.
        assert "no loop named 'nope'" in refused(d, "x", "--like", "nope")
        assert "a loop named 'l1' exists" in refused(d, "l1", "--like", "l0")
        assert "a loop named 'two' exists" in refused(d, "two", "--like", "l0")
        assert "not a valid loop name" in refused(d, "bad name", "--like", "l0")
        assert "budget.tokens: must be positive" in refused(
            d, "y", "--like", "l0", "--tokens", "-5"
        )
        assert "max_iterations" in refused(d, "y", "--like", "l0", "--max-iterations", "0")
        assert "nonsense" in refused(d, "y", "--like", "l0", "--prompt", "uses $nonsense")
        assert [x["name"] for x in d.status()["loops"]] == ["l0", "l1", "two"]

        # An endless one, then a crash: `serve --resume` brings both back.
        assert d.ctl("add", "three", "--like", "l1", "--usd", "9").returncode == 0
        poll(lambda: journal_loop(d, "three").get("iteration", 0) >= 1, 30, "three journalled")
        os.kill(d.pid, signal.SIGKILL)
        assert wait_gone([d.pid], timeout=10) == []
    finally:
        kill_daemon(d.pid)
    resumed = d.resume()
    try:
        loops = {x["name"]: x for x in resumed.status()["loops"]}
        assert list(loops) == ["l0", "l1", "two", "three"]
        assert loops["two"]["state"] == two["state"]
        assert loops["two"]["iteration"] == 2
        assert loops["three"]["limits"]["usd"] == 9.0
        assert loops["three"]["max_iterations"] == 100_000  # l1's
        assert journal_loop(resumed, "three")["limits"]["usd"] == 9.0
        before = loops["three"]["iteration"]
        poll(lambda: resumed.loop("three")["iteration"] > before, 30, "three going on")
    finally:
        kill_daemon(resumed.pid)


def test_ctl_add_like_a_worktree_loop_gets_its_own_worktree(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (tmp_path / "ws").mkdir()
    toml = fixer_config()
    (tmp_path / "loops.toml").write_text(toml)
    prepare_worktrees(load_config(tmp_path / "loops.toml", state_dir=tmp_path / "state"))
    d = start_daemon(tmp_path, toml)
    try:
        git("branch", "loopvisor/taken", cwd=repo)
        assert "branch loopvisor/taken exists" in refused(d, "taken", "--like", "fix")
        (d.state / "worktrees" / "squatted").mkdir(parents=True)
        assert "squatted exists" in refused(d, "squatted", "--like", "fix")

        r = d.ctl("add", "fix2", "--like", "fix")
        assert r.returncode == 0, r.stderr
        worktree = d.state / "worktrees" / "fix2"
        assert r.stdout.strip() == f"fix2: started like fix, worktree {worktree}"
        poll(lambda: d.loop("fix2")["state"] == "succeeded", 30, "fix2 to succeed")
        assert (worktree / "app.py").read_text() == "fixed\n"
        log = git("log", "--format=%s", "loopvisor/fix2", cwd=repo)
        assert "fix2" in log
        # The like-loop's branch is its own.
        assert git("rev-parse", "loopvisor/fix", cwd=repo) != git(
            "rev-parse", "loopvisor/fix2", cwd=repo
        )
        # A fork of the added loop (its lineage: fix2 like fix, fix2b from fix2@1).
        r = lv(
            "fork",
            "fix2",
            "--iteration",
            "1",
            "--name",
            "fix2b",
            "--state-dir",
            d.state,
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stderr
        poll(lambda: d.loop("fix2b")["state"] in ENDED, 30, "fix2b to end")
    finally:
        kill_daemon(d.pid)
    # Offline, diff and clean know the added loop (not in loops.toml) and its fork.
    for name in ("fix2", "fix2b"):
        diff = lv("diff", name, "--state-dir", d.state, cwd=tmp_path)
        assert diff.returncode == 0, diff.stderr
        assert "+fixed" in diff.stdout
    kept = lv("clean", "fix2", "--state-dir", d.state, cwd=tmp_path)
    assert kept.returncode == 1, kept.stderr  # unmerged commits: refused, by name
    assert "fix2" in kept.stderr
    assert "no loop named" not in kept.stderr
    for name in ("fix2", "fix2b"):
        forced = lv("clean", name, "--force", "--state-dir", d.state, cwd=tmp_path)
        assert forced.returncode == 0, forced.stderr
        assert not (d.state / "worktrees" / name).exists()
