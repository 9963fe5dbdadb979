"""Fork from iteration N (`loopvisor fork`, the `fork` op) against a real `loopvisor
serve` and real git repositories: the fork's branch starts at iteration N's commit
(its tree is that commit's, file for file), it runs and commits on its own branch,
the parent's branch stays as it was, status / status --json / history show the
parent, `serve --resume` keeps the fork, and every refusal says why."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import anyio
import pytest
from daemon import kill_daemon, lv, poll, start_daemon
from gitrepo import commits, git, make_repo
from helpers import loop, sim_agent, wait_gone
from loops_support import fixer_config

from supervisor.api import ControlError
from supervisor.config.load import load_config
from supervisor.control.client import RemoteSupervisor
from supervisor.worktree import prepare_worktrees

pytestmark = pytest.mark.anyio


def fork_toml() -> str:
    """`fix` writes a draft in iterations 1 and 2 (2 commits nothing) and the fix in 3;
    `plain` has no worktree; `spin` never ends (the run stays resumable)."""
    return fixer_config(
        fix={"budget": {"tokens": 100_000}},
        more=(
            sim_agent("slow", rate=40, reply_tokens=20),
            loop(
                "spin",
                "slow",
                workspace="ws",
                done_marker="NEVER",
                max_iterations=100_000,
                on_stuck="continue",
            ),
        ),
    )


def tree(repo: Path, rev: str) -> dict[str, str]:
    """{path: blob} of a commit: its files, compared by content."""
    out = git("ls-tree", "-r", rev, cwd=repo)
    return {line.split("\t")[1]: line.split()[2] for line in out.splitlines()}


def outcomes(status: dict[str, object], name: str) -> dict[str, object]:
    loops = status["loops"]
    assert isinstance(loops, list)
    return next(row for row in loops if row["name"] == name)


@pytest.mark.timeout(120)  # two `serve` start-ups (one a resume) and ~10 CLI processes
async def test_fork_from_an_iteration_over_a_served_run(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (tmp_path / "ws").mkdir()
    (tmp_path / "loops.toml").write_text(fork_toml())
    prepare_worktrees(load_config(tmp_path / "loops.toml", state_dir=tmp_path / "state"))
    daemon = start_daemon(tmp_path, fork_toml())
    try:
        async with RemoteSupervisor(daemon.socket, state_dir=daemon.state) as remote:
            want = ["continue", "continue", "succeeded"]
            with anyio.fail_after(30):
                while [r.outcome for r in await remote.iterations("fix")] != want:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
        parent_made = commits(repo, "loopvisor/fix")
        parent_tip = git("rev-parse", "loopvisor/fix", cwd=repo).strip()
        first = parent_made[0]["sha"]  # iteration 1's commit (2 made none)

        # Iteration 2 changed nothing: the fork starts at the tip it left, iteration 1's.
        done = lv("fork", "fix", "--iteration", "2", "--state-dir", daemon.state, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"fix-fork2: forked from fix@2 at commit {first[:10]}"
        assert git("rev-parse", "refs/loopvisor/base/loopvisor/fix-fork2", cwd=repo).strip() == (
            first
        )

        def fork_ended() -> dict[str, object]:
            row = outcomes(daemon.status(), "fix-fork2")
            return row if row["state"] == "succeeded" else {}

        row = poll(fork_ended, 30, "the fork to succeed")
        assert row["forked_from"] == "fix@2"
        made = commits(repo, "loopvisor/fix-fork2")
        # It began at iteration 1's commit: same files; then its own fix on top.
        assert made[0]["sha"] == first
        own = made[1:]
        assert [c["Loopvisor-Loop"] for c in own] == ["fix-fork2"]
        assert git("rev-parse", f"{own[0]['sha']}^", cwd=repo).strip() == first
        assert tree(repo, f"{own[0]['sha']}^") == tree(repo, first)
        worktree = daemon.state / "worktrees" / "fix-fork2"
        assert (worktree / "app.py").read_text() == "fixed\n"
        # The parent is untouched.
        assert git("rev-parse", "loopvisor/fix", cwd=repo).strip() == parent_tip
        assert commits(repo, "loopvisor/fix") == parent_made

        status = lv("status", "--state-dir", daemon.state, cwd=tmp_path)
        assert "forked from fix@2" in status.stdout, status.stdout
        as_json = json.loads(
            lv("status", "--json", "--state-dir", daemon.state, cwd=tmp_path).stdout
        )
        assert outcomes(as_json, "fix-fork2")["forked_from"] == "fix@2"
        assert outcomes(as_json, "fix")["forked_from"] == ""
        history = lv("history", "fix-fork2", "--state-dir", daemon.state, cwd=tmp_path)
        assert "forked from fix@2" in history.stdout, history.stdout
        # diff knows the fork (not in loops.toml): what it did since iteration 1's commit.
        diff = lv("diff", "fix-fork2", "--state-dir", daemon.state, cwd=tmp_path)
        assert diff.returncode == 0, diff.stderr
        assert "+fixed" in diff.stdout
        assert "NEWS.md" in diff.stdout
        own_n = own[0]["Loopvisor-Iteration"]
        one = lv(
            "diff", "fix-fork2", "--iteration", own_n, "--state-dir", daemon.state, cwd=tmp_path
        )
        assert one.returncode == 0, one.stderr
        assert "+fixed" in one.stdout

        # Refusals: each says why (the CLI's exit code 1), and nothing is made.
        unknown = lv("fork", "nope", "--iteration", "1", "--state-dir", daemon.state, cwd=tmp_path)
        assert unknown.returncode == 1
        assert "no loop named 'nope'" in unknown.stderr
        git("branch", "loopvisor/taken", "main", cwd=repo)
        async with RemoteSupervisor(daemon.socket, state_dir=daemon.state) as remote:
            for loop_name, n, name, why in (
                ("fix", 9, None, "no iteration 9"),
                ("fix", 0, None, "start at 1"),
                ("plain", 1, None, "has no worktree"),
                ("fix", 1, "fix", "exists in this run"),
                ("fix", 1, "../x", "not a valid loop name"),
                ("fix", 1, "taken", "branch loopvisor/taken exists"),
            ):
                with pytest.raises(ControlError, match=why):
                    await remote.fork(loop_name, iteration=n, name=name)
        assert not (daemon.state / "worktrees" / "taken").exists()
        assert sorted(p.name for p in (daemon.state / "worktrees").iterdir()) == [
            "fix",
            "fix-fork2",
        ]

        # After a crash, `serve --resume` brings the fork back, as it ended.
        os.kill(daemon.pid, signal.SIGKILL)
        assert wait_gone([daemon.pid], timeout=10) == []
        daemon = daemon.resume()
        row = poll(lambda: outcomes(daemon.status(), "fix-fork2"), 30, "the resumed fork")
        assert (row["state"], row["forked_from"]) == ("succeeded", "fix@2")
        kill_daemon(daemon.pid)
        # clean knows the fork too: it refuses to lose its unmerged commits, --force cleans.
        refused = lv("clean", "fix-fork2", "--state-dir", daemon.state, cwd=tmp_path)
        assert refused.returncode == 1, refused.stderr
        assert "fix-fork2" in refused.stderr
        assert "no loop named" not in refused.stderr
        forced = lv("clean", "fix-fork2", "--force", "--state-dir", daemon.state, cwd=tmp_path)
        assert forced.returncode == 0, forced.stderr
        assert not worktree.exists()
    finally:
        kill_daemon(daemon.pid)


def test_fork_without_a_supervisor_says_to_serve(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    (tmp_path / "ws").mkdir()
    (tmp_path / "loops.toml").write_text(fork_toml())
    r = lv("fork", "fix", "--iteration", "1", "--state-dir", tmp_path / "state", cwd=tmp_path)
    assert r.returncode == 1
    assert "no supervisor serves" in r.stderr
    assert "loopvisor serve" in r.stderr
