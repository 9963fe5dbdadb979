"""Real git repositories for the worktree and landing tests: make one, commit in it,
take a byte-for-byte picture of a checkout (HEAD, refs, index, every file), and a
loops.toml whose sim loop fixes app.py in a worktree of it."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from supervisor.config.load import load_config
from supervisor.spec import Config

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(*args: str, cwd: Path, check: bool = True) -> str:
    out = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **GIT_ENV},
        timeout=60,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def make_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    """A repo on branch main with one commit of `files` (default: app.py)."""
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    for name, text in (files or {"app.py": "print('v1')\n"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git("add", "-A", cwd=path)
    git("commit", "-qm", "init", cwd=path)
    return path


def commit_all(path: Path, message: str) -> str:
    git("add", "-A", cwd=path)
    git("commit", "-qm", message, cwd=path)
    return git("rev-parse", "HEAD", cwd=path).strip()


def checkout_picture(path: Path, *, but_loop_refs: bool = False) -> dict[str, str]:
    """Everything a merge could change in a checkout, as digests: HEAD and every ref,
    the index file's bytes, and every file of the working tree (tracked, untracked and
    ignored alike; the `.git` dir's own files apart from those named). `but_loop_refs`
    leaves out the loops' own refs (a run's checkpoint commits move them)."""
    gitdir = Path(git("rev-parse", "--absolute-git-dir", cwd=path).strip())
    refs = git("for-each-ref", "--format=%(refname) %(objectname)", cwd=path).splitlines()
    if but_loop_refs:
        refs = [r for r in refs if not r.startswith(("refs/heads/loopvisor/", "refs/loopvisor/"))]
    picture = {
        "HEAD": (gitdir / "HEAD").read_text(),
        "refs": "\n".join(refs),
        "index": _digest(gitdir / "index"),
    }
    for file in sorted(path.rglob("*")):
        rel = file.relative_to(path)
        if rel.parts[0] == ".git" or not file.is_file():
            continue
        picture[f"file:{rel}"] = _digest(file)
    return picture


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "(none)"


# -- a loop that fixes app.py in a worktree of tmp_path/repo --------------------------
def config_text(workspace: str = "", **loop_keys: str) -> str:
    keys = "".join(f"{k} = {v}\n" for k, v in loop_keys.items())
    return (
        '[agents.a]\nkind = "sim"\nrate = 0\nconverge_after = 1\n'
        'files = { "app.py" = "print(\'fixed\')\\n" }\n\n'
        '[[loop]]\nname = "fix"\nagent = "a"\nprompt = "fix it"\n'
        f'workspace = {{ repo = "repo", worktree = true{workspace} }}\n'
        'checks = [{ run = "grep -q fixed app.py" }]\n' + keys
    )


def configure(tmp_path: Path, workspace: str = "", **loop_keys: str) -> Config:
    cfg = tmp_path / "loops.toml"
    cfg.write_text(config_text(workspace, **loop_keys))
    return load_config(cfg)
