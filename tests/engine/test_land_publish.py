"""`land --push` and `land --pr`: a push to a local bare repository as the remote, and
the GitHub CLI as a fake `gh` script on PATH that records its argv and stdin (or no
`gh` at all, or one that is not logged in)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from landrepo import commit_all, git, make_repo

from supervisor.config.load import load_config
from supervisor.worktree import prepare_worktrees, unmerged_commits

CONFIG = """
[agents.a]
kind = "sim"

[[loop]]
name = "fix"
agent = "a"
prompt = "Fix the login bug\\nThen say DONE."
workspace = { repo = "repo", worktree = true }
done_marker = "DONE"
"""

FAKE_GH = """#!{python}
import json, os, sys
record = os.environ["FAKE_GH_RECORD"]
with open(record, "a") as fh:
    body = sys.stdin.read() if "--body-file" in sys.argv else None
    fh.write(json.dumps({{"argv": sys.argv[1:], "stdin": body}}) + "\\n")
if sys.argv[1:3] == ["auth", "status"]:
    sys.exit(int(os.environ.get("FAKE_GH_AUTH_EXIT", "0")))
if sys.argv[1:3] == ["pr", "create"]:
    print("https://github.example/o/r/pull/7")
"""


def world(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(repo with a bare `origin`, loops.toml, a bin dir holding only git)."""
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", str(remote), cwd=tmp_path)
    repo = make_repo(tmp_path / "repo")
    git("remote", "add", "origin", str(remote), cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)
    cfg = tmp_path / "loops.toml"
    cfg.write_text(CONFIG)
    config = load_config(cfg)
    prepare_worktrees(config)
    work = config.loop("fix").workspace
    (work / "app.py").write_text("print('fixed')\n")
    commit_all(work, "fix: iteration 1")
    (work / "more.py").write_text("left uncommitted\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    git_path = shutil.which("git")
    assert git_path is not None
    (bin_dir / "git").symlink_to(git_path)
    return repo, cfg, bin_dir


def land_cli(cfg: Path, *args: str, path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`loopvisor land fix ARGS` with PATH = `path` only (git, maybe a fake gh)."""
    return subprocess.run(
        [sys.executable, "-m", "supervisor", "land", "fix", *args, "--config", str(cfg)],
        cwd=cfg.parent,
        env={**os.environ, "PATH": str(path), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def fake_gh(bin_dir: Path) -> Path:
    gh = bin_dir / "gh"
    gh.write_text(FAKE_GH.format(python=sys.executable))
    gh.chmod(0o755)
    return bin_dir / "gh-calls.jsonl"


def calls(record: Path) -> list[dict[str, object]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_push_sends_the_branch_to_the_remote(tmp_path: Path) -> None:
    repo, cfg, bin_dir = world(tmp_path)
    result = land_cli(cfg, "--push", path=bin_dir)
    assert result.returncode == 0, result.stderr
    assert "committed its worktree's uncommitted changes (1 file(s))" in result.stdout
    assert "pushed loopvisor/fix to origin" in result.stdout
    remote_tip = git("rev-parse", "loopvisor/fix", cwd=tmp_path / "remote.git").strip()
    assert remote_tip == git("rev-parse", "loopvisor/fix", cwd=repo).strip()
    assert unmerged_commits(repo, "loopvisor/fix") == []  # the remote holds them now
    assert git("rev-parse", "main", cwd=repo) == git("rev-parse", "origin/main", cwd=repo)


def test_push_to_a_remote_that_does_not_exist_says_so(tmp_path: Path) -> None:
    _, cfg, bin_dir = world(tmp_path)
    result = land_cli(cfg, "--push", "upstream", path=bin_dir)
    assert result.returncode == 1
    assert "no remote named 'upstream'" in result.stderr


def test_pr_pushes_and_opens_a_pull_request_with_gh(tmp_path: Path) -> None:
    """The fake gh records what it was asked: title from the loop, body from its
    history, head the loop's branch, base the branch it was made from."""
    repo, cfg, bin_dir = world(tmp_path)
    record = fake_gh(bin_dir)
    result = land_cli(cfg, "--pr", path=bin_dir, FAKE_GH_RECORD=str(record))
    assert result.returncode == 0, result.stderr
    assert "opened a pull request: https://github.example/o/r/pull/7" in result.stdout
    auth, listed, create = calls(record)
    assert auth["argv"] == ["auth", "status"]
    assert listed["argv"] == [
        "pr", "list", "--head", "loopvisor/fix", "--base", "main", "--state", "open",
        "--json", "url",
    ]  # fmt: skip
    argv = create["argv"]
    assert isinstance(argv, list)
    assert argv[:2] == ["pr", "create"]
    assert argv[argv.index("--head") + 1] == "loopvisor/fix"
    assert argv[argv.index("--base") + 1] == "main"
    assert argv[argv.index("--title") + 1] == "fix: Fix the login bug"
    assert "`fix` on branch `loopvisor/fix` (from `main`)" in str(create["stdin"])
    assert "loopvisor/fix" in git("branch", "-r", cwd=repo)


def test_pr_without_gh_says_so_and_pushes_nothing(tmp_path: Path) -> None:
    repo, cfg, bin_dir = world(tmp_path)
    result = land_cli(cfg, "--pr", path=bin_dir)
    assert result.returncode == 1
    assert "the GitHub CLI `gh` is not installed" in result.stderr
    assert "nothing was pushed" in result.stderr
    assert "loopvisor/fix" not in git("branch", "-r", cwd=repo)
    assert "Traceback" not in result.stderr


def test_pr_with_gh_not_logged_in_says_so(tmp_path: Path) -> None:
    repo, cfg, bin_dir = world(tmp_path)
    record = fake_gh(bin_dir)
    result = land_cli(cfg, "--pr", path=bin_dir, FAKE_GH_RECORD=str(record), FAKE_GH_AUTH_EXIT="1")
    assert result.returncode == 1
    assert "`gh` is not logged in (run `gh auth login`)" in result.stderr
    assert [c["argv"] for c in calls(record)] == [["auth", "status"]]
    assert "loopvisor/fix" not in git("branch", "-r", cwd=repo)
