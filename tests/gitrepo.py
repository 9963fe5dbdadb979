"""Real git repositories for the checkpoint and diff tests (no tests here)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

IDENTITY = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def git(*args: str | Path, cwd: Path, check: bool = True) -> str:
    out = subprocess.run(
        ["git", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **IDENTITY},
        timeout=30,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"git {' '.join(map(str, args))}: {out.stderr}")
    return out.stdout


def make_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    """A repo on `main` with one commit of `files` (default: app.py) and a .gitignore
    that keeps out `secret.env` and `cache/`."""
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    for rel, text in {"app.py": "print('v1')\n", **(files or {})}.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    (path / ".gitignore").write_text("secret.env\ncache/\n")
    git("add", "-A", cwd=path)
    git("commit", "-qm", "init", cwd=path)
    return path


def commits(repo: Path, branch: str) -> list[dict[str, str]]:
    """The commits on `branch` since it left main, oldest first: sha, author, committer,
    subject and trailers (each trailer key as git parses it)."""
    sep = "\x1e"
    fmt = "%H%x1f%an <%ae>%x1f%cn <%ce>%x1f%s%x1f%(trailers:only,unfold)" + sep
    out = git("log", "--reverse", f"--format={fmt}", f"main..{branch}", cwd=repo)
    found = []
    for record in out.split(sep):
        if not record.strip():
            continue
        sha, author, committer, subject, trailers = record.strip("\n").split("\x1f")
        pairs = dict(line.split(": ", 1) for line in trailers.strip().splitlines())
        found.append(
            {"sha": sha, "author": author, "committer": committer, "subject": subject, **pairs}
        )
    return found


def tracked(repo: Path, rev: str) -> set[str]:
    return set(git("ls-tree", "-r", "--name-only", rev, cwd=repo).split())
