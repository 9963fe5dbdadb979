"""Worktrees per loop, against real git repositories."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.config.load import load_config
from supervisor.worktree import WorktreeError, changed_files, overlaps, prepare_worktrees

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def git(*args: str, cwd: Path) -> str:
    import os

    out = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **GIT_ENV},
        timeout=30,
    )
    return out.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", "-b", "main", cwd=repo)
    (repo / "app.py").write_text("print('v1')\n")
    git("add", "app.py", cwd=repo)
    git("commit", "-qm", "init", cwd=repo)
    return repo


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "loops.toml"
    path.write_text(body)
    return path


LOOPS = """
[agents.a]
kind = "sim"
rate = 0
converge_after = 1
files = { "app.py" = "print('from a')\\n" }

[agents.b]
kind = "sim"
rate = 0
converge_after = 1
files = { "app.py" = "print('from b')\\n", "b.txt" = "b\\n" }

[[loop]]
name = "fix-a"
agent = "a"
prompt = "go"
workspace = { repo = "repo", worktree = true }
checks = [{ run = "grep -q 'from a' app.py" }]

[[loop]]
name = "fix-b"
agent = "b"
prompt = "go"
workspace = { repo = "repo", worktree = true, branch = "wip/{loop}" }
checks = [{ run = "grep -q 'from b' app.py" }]
"""


def test_each_loop_gets_its_own_worktree_and_branch(tmp_path: Path, repo: Path) -> None:
    config = load_config(write_config(tmp_path, LOOPS))
    created = prepare_worktrees(config)
    assert len(created) == 2
    a, b = config.loops
    assert (a.workspace / "app.py").read_text() == "print('v1')\n"
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=a.workspace).strip() == "loopvisor/fix-a"
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=b.workspace).strip() == "wip/fix-b"
    assert a.workspace.is_relative_to(config.supervisor.state_dir)
    assert prepare_worktrees(config) == []  # idempotent: existing worktrees are reused


def test_overlapping_changes_are_found(tmp_path: Path, repo: Path) -> None:
    config = load_config(write_config(tmp_path, LOOPS))
    prepare_worktrees(config)
    a, b = config.loops
    (a.workspace / "app.py").write_text("x\n")
    (b.workspace / "app.py").write_text("y\n")
    (b.workspace / "new.txt").write_text("n\n")
    changes = {a.name: changed_files(a), b.name: changed_files(b)}
    assert changes == {"fix-a": {"app.py"}, "fix-b": {"app.py", "new.txt"}}
    assert list(overlaps(changes)) == [("fix-a", "fix-b", {"app.py"})]


def test_the_loops_of_one_race_never_overlap_but_others_still_do() -> None:
    """A race's attempts are alternatives (one is kept), and the race loop takes the
    winner's tip: no "expect merge conflicts" among them; against any other loop, yes."""
    changes = {name: {"app.py"} for name in ("fix", "fix.1", "fix.2", "lint")}
    races = {"fix": "fix", "fix.1": "fix", "fix.2": "fix"}
    assert [(a, b) for a, b, _ in overlaps(changes, races)] == [
        ("fix", "lint"),
        ("fix.1", "lint"),
        ("fix.2", "lint"),
    ]
    assert len(list(overlaps(changes))) == 6


def test_dirty_repo_is_refused(tmp_path: Path, repo: Path) -> None:
    (repo / "app.py").write_text("print('uncommitted')\n")
    config = load_config(write_config(tmp_path, LOOPS))
    with pytest.raises(WorktreeError, match="uncommitted changes"):
        prepare_worktrees(config)


def test_run_warns_about_overlap_and_clean_removes_worktree(tmp_path: Path, repo: Path) -> None:
    cfg = write_config(tmp_path, LOOPS)
    run = subprocess.run(
        [sys.executable, "-m", "supervisor", "run", str(cfg), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "both changed app.py" in run.stdout
    state = tmp_path / ".loopvisor" / "worktrees"
    assert (state / "fix-a" / "app.py").read_text() == "print('from a')\n"
    assert (repo / "app.py").read_text() == "print('v1')\n"  # the repo itself is untouched
    clean = subprocess.run(
        [sys.executable, "-m", "supervisor", "clean", "fix-a", "--config", str(cfg), "--force"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert clean.returncode == 0, clean.stderr
    assert "branch loopvisor/fix-a kept" in clean.stdout
    assert not (state / "fix-a").exists()
    assert "loopvisor/fix-a" in git("branch", "--list", cwd=repo)


def test_clean_delete_branch_after_a_plain_clean_deletes_the_branch(
    tmp_path: Path, repo: Path
) -> None:
    """Issue 11: `clean LOOP --delete-branch` after `clean LOOP` kept the branch."""
    cfg = write_config(tmp_path, LOOPS)
    config = load_config(cfg)
    prepare_worktrees(config)

    def clean(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "supervisor", "clean", "fix-a", "--config", str(cfg), *extra],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )

    assert clean().returncode == 0
    assert "loopvisor/fix-a" in git("branch", "--list", cwd=repo)
    again = clean("--delete-branch")
    assert again.returncode == 0, again.stderr
    assert "deleted branch loopvisor/fix-a" in again.stdout
    assert "loopvisor/fix-a" not in git("branch", "--list", cwd=repo)
    third = clean("--delete-branch")
    assert third.returncode == 0, third.stderr
    assert "no branch loopvisor/fix-a" in third.stdout
