"""README's "From loop to merged change": every command it shows runs, in a scratch
repository with a loop that succeeds (a sim agent), a bare `origin` and a fake `gh`.

The first block runs in order, as a user would type it; each alternative of the
second runs on a fresh run of the loop."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon import kill_daemon
from landrepo import GIT_ENV, commit_all, git, make_repo

from supervisor.events import END_STATES

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## From loop to merged change"
LOOPS = """
[agents.sim]
kind = "sim"
rate = 0
converge_after = 1
files = { "auth.py" = "def refresh():\\n    return 'fixed'\\n" }

[[loop]]
name = "fix-auth"
agent = "sim"
prompt = "Fix token refresh in auth.py"
workspace = { repo = ".", worktree = true, base = "main" }
checks = [{ run = "grep -q fixed auth.py" }]
"""
FAKE_GH = (
    f"#!{sys.executable}\nimport sys\nsys.stdin.read()\nprint('https://github.example/pull/1')\n"
)


def blocks() -> list[list[str]]:
    """The commands of each console block of the section, in order."""
    text = README.read_text(encoding="utf-8").split(SECTION, 1)[1].split("\n## ", 1)[0]
    found = []
    for block in text.split("```console\n")[1:]:
        body = block.split("```", 1)[0]
        found.append([line[2:] for line in body.splitlines() if line.startswith("$ ")])
    return found


def scratch(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A repo on main with loops.toml, a `release` branch, a bare origin; the loop run."""
    repo = make_repo(tmp_path / "myrepo", {"auth.py": "def refresh():\n    return 'bug'\n"})
    (repo / ".gitignore").write_text(".loopvisor/\n")
    (repo / "loops.toml").write_text(LOOPS)
    commit_all(repo, "loops.toml")
    git("branch", "release", cwd=repo)
    git("init", "-q", "--bare", str(tmp_path / "origin.git"), cwd=tmp_path)
    git("remote", "add", "origin", str(tmp_path / "origin.git"), cwd=repo)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gh").write_text(FAKE_GH)
    (bin_dir / "gh").chmod(0o755)
    env = {**os.environ, **GIT_ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return repo, env


def sh(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(command, comments=True)
    if argv[0] == "loopvisor":
        argv = [sys.executable, "-m", "supervisor", *argv[1:]]
    assert shutil.which(argv[0], path=env["PATH"]) or Path(argv[0]).exists(), argv
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_section_shows_the_commands_this_test_runs() -> None:
    first, others, forks = blocks()
    assert first[0].startswith("loopvisor run")
    assert any(c.startswith("loopvisor land fix-auth ") for c in first)
    assert len(others) == 4
    assert forks[0].startswith("loopvisor serve --detach")
    assert any(c.startswith("loopvisor fork fix-auth ") for c in forks)


def test_the_way_from_loop_to_merged_change_runs_as_shown(tmp_path: Path) -> None:
    repo, env = scratch(tmp_path)
    for command in blocks()[0]:
        out = sh(command, repo, env)
        assert out.returncode == 0, f"{command}: {out.stdout}{out.stderr}"
    assert "return 'fixed'" in (repo / "auth.py").read_text()
    assert "loopvisor/fix-auth" not in git("branch", "--list", cwd=repo)
    assert not (repo / ".loopvisor" / "worktrees" / "fix-auth").exists()


@pytest.mark.parametrize("index", range(4))
def test_each_other_way_to_land_runs_as_shown(tmp_path: Path, index: int) -> None:
    repo, env = scratch(tmp_path)
    run = sh(blocks()[0][0], repo, env)
    assert run.returncode == 0, run.stderr
    command = blocks()[1][index]
    out = sh(command, repo, env)
    assert out.returncode == 0, f"{command}: {out.stdout}{out.stderr}"
    assert "fix-auth: " in out.stdout


def _state(repo: Path, env: dict[str, str], loop: str) -> str:
    out = sh("loopvisor status --json", repo, env)
    rows = json.loads(out.stdout)["loops"] if out.returncode == 0 else []
    return next((str(row["state"]) for row in rows if row["name"] == loop), "")


def _wait_ended(repo: Path, env: dict[str, str], loop: str) -> None:
    """As a user would: the next command once the loop has ended (`status`)."""
    deadline = time.monotonic() + 60
    while _state(repo, env, loop) not in END_STATES:
        assert time.monotonic() < deadline, f"{loop} did not end"
        time.sleep(0.2)


def test_forking_runs_as_shown(tmp_path: Path) -> None:
    repo, env = scratch(tmp_path)
    (repo / "prompts").mkdir()
    (repo / "prompts" / "fix-auth-b.md").write_text("Fix token refresh another way\n")
    try:
        for command in blocks()[2]:
            if command.startswith("loopvisor history"):
                _wait_ended(repo, env, "fix-auth")
            if command.startswith("loopvisor land"):
                _wait_ended(repo, env, "fix-auth-b")
            out = sh(command, repo, env)
            assert out.returncode == 0, f"{command}: {out.stdout}{out.stderr}"
            if command.startswith("loopvisor status"):
                assert "forked from fix-auth@1" in out.stdout
    finally:
        pid_file = repo / ".loopvisor" / "serve.pid"
        if pid_file.exists():
            kill_daemon(int(pid_file.read_text()))
    assert "return 'fixed'" in git("show", "main:auth.py", cwd=repo)
