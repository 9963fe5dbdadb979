"""A loop's workspace keys: `workspace` (a directory, or a git worktree with its
branch, base and include_uncommitted), `setup` (commands run once in a new worktree)
and `on_success` (what a worktree loop does with its branch once it succeeded).

`base` is resolved in the repo when the config is read, so a typo is a FILE:LINE:COL
error from `loopvisor check`, not a surprise at start.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor.config._schema import Table, describe, path_problem, read_child_env
from supervisor.spec import ON_SUCCESS, CheckSpec, OnSuccess, WorktreeSpec
from supervisor.worktree import WorktreeError, resolve_base

if TYPE_CHECKING:
    from supervisor.config._loops import Paths

WORKSPACE_KEYS = frozenset({"repo", "worktree", "branch", "base", "include_uncommitted"})
SETUP_KEYS = frozenset({"run", "timeout", "env", "pass_env"})
SETUP_TIMEOUT_S = 600.0
"""A setup command's default timeout (`npm ci` takes longer than a check)."""


def read_workspace(t: Table, name: str, paths: Paths) -> tuple[Path, WorktreeSpec | None]:
    value = t.raw("workspace")
    if "workspace" not in t:
        return paths.config_dir, None
    if isinstance(value, str):
        folder, problem = path_problem(paths.config_dir / t.string("workspace", ""))
        if problem is not None:
            t.error("workspace", f'directory "{value}" {problem} ({folder})')
        return folder, None
    ws = t.table("workspace")
    if ws is None or not isinstance(value, dict):
        return paths.config_dir, None
    ws.check_keys(WORKSPACE_KEYS, "workspace")
    repo = paths.config_dir
    is_repo = False
    if ws.require("repo", "workspace"):
        rel = ws.string("repo", None, nonempty=True)
        if rel is not None:
            repo, problem = path_problem(paths.config_dir / rel)
            if problem is not None:
                ws.error("repo", f'directory "{rel}" {problem} ({repo})')
            elif not _exists(repo / ".git"):
                ws.error("repo", f'"{rel}" is not a git repository (no .git in {repo})')
            else:
                is_repo = True
    branch = ws.string("branch", "loopvisor/{loop}", nonempty=True)
    if not _only_loop_placeholder(branch):
        ws.error("branch", f'"{branch}" may only use the {{loop}} placeholder')
    base = ws.string("base", None, nonempty=True)
    after_loop = base.removeprefix("loop:") if base and base.startswith("loop:") else None
    if base is not None and is_repo and after_loop is None:  # a loop's branch: see _pipeline
        try:
            resolve_base(repo, base)
        except WorktreeError as exc:
            ws.error("base", str(exc))
    include = ws.boolean("include_uncommitted", False)
    if not ws.boolean("worktree", True):
        for key in ("base", "include_uncommitted"):
            if key in ws:
                ws.error(key, "has no effect without worktree = true")
        return repo, None
    spec = WorktreeSpec(
        repo=repo, branch=branch, base=base, include_uncommitted=include, after_loop=after_loop
    )
    return paths.state_dir / "worktrees" / name, spec


def read_setup(t: Table, worktree: WorktreeSpec | None) -> tuple[CheckSpec, ...]:
    """`setup = ["cp ../.env .", ["npm", "ci"], { run = "make deps", timeout = "20m" }]`:
    shell strings, argv arrays or tables (`run`, `timeout`, `env`, `pass_env`)."""
    raw = t.raw("setup")
    if "setup" not in t:
        return ()
    if not isinstance(raw, list):
        t.type_error("setup", 'an array of commands like ["npm ci"]')
        return ()
    if worktree is None:
        t.error(
            "setup", "runs once in a new worktree: it needs workspace = { ..., worktree = true }"
        )
    steps: list[CheckSpec] = []
    for index, item in enumerate(raw):
        at = (*t.at("setup"), index)
        label = f"setup[{index}]."
        if isinstance(item, str | list):
            step = Table(t.issues, {"run": (item, at)}, at, label)
        elif isinstance(item, dict):
            step = Table.of(t.issues, item, at, label)
            step.check_keys(SETUP_KEYS, f"setup[{index}]")
        else:
            t.issues.error(
                at,
                f'setup[{index}]: expected a command ("npm ci", ["npm", "ci"] or a table), '
                f"got {describe(item)}",
            )
            continue
        run: str | tuple[str, ...] = ""
        if step.require("run", f"setup[{index}]"):
            if isinstance(step.raw("run"), list):
                run = step.strings("run", (), nonempty=True)
            else:
                run = step.string("run", "", nonempty=True)
        env, pass_env = read_child_env(step)
        steps.append(
            CheckSpec(
                name=f"setup {index + 1}",
                run=run,
                timeout=step.duration("timeout", SETUP_TIMEOUT_S),
                env=env,
                pass_env=pass_env,
            )
        )
    return tuple(steps)


def read_on_success(t: Table, worktree: WorktreeSpec | None) -> OnSuccess:
    mode: OnSuccess = t.choice("on_success", ON_SUCCESS, "keep")  # type: ignore[assignment]
    if mode != "keep" and worktree is None:
        t.error(
            "on_success",
            f'"{mode}" lands the loop\'s branch: it needs workspace = {{ ..., worktree = true }}',
        )
    return mode


REMOTE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
"""A remote's name as `git remote add` takes it, kept plain: no option, path or URL."""


def read_push_remote(t: Table, on_success: OnSuccess) -> str | None:
    """`push_remote`: the remote `on_success = "push"` or `"pr"` pushes to (default
    origin). A URL or a path is not taken: name it with `git remote add` first."""
    remote = t.string("push_remote", None, nonempty=True)
    if remote is None:
        return None
    if not REMOTE_NAME.fullmatch(remote) or ".." in remote or remote.endswith(".lock"):
        t.error(
            "push_remote",
            f"{describe(remote)} is not a remote name (letters, digits, _ . -; add a URL "
            "with `git remote add NAME URL` and name it here)",
        )
        remote = None
    if on_success not in ("push", "pr"):
        t.error(
            "push_remote",
            f'is for on_success = "push" or "pr"; this loop\'s on_success is "{on_success}"',
        )
    return remote


def _exists(path: Path) -> bool:
    """`path.exists()`, False where the name itself is unusable (too long for the OS)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _only_loop_placeholder(branch: str) -> bool:
    """Whether `branch` uses no format field but a bare `{loop}`: str.format would
    follow `{loop.attr}` and honour `{loop:>999999999}` (a gigabyte of padding)."""
    try:
        fields = [f for f in string.Formatter().parse(branch) if f[1] is not None]
    except ValueError:
        return False
    return all(name == "loop" and not spec and conv is None for _, name, spec, conv in fields)
