"""A git worktree per loop: loops that edit one repo each get their own checkout.

`workspace = { repo = ".", worktree = true, branch = "loopvisor/{loop}" }` makes the
loop's workspace `STATE_DIR/worktrees/LOOP`, a `git worktree` on its own branch,
created before the first iteration and kept after the loop ends so that a person
can review, merge (`git merge loopvisor/LOOP`) or discard it (`loopvisor clean LOOP`).
The worktree starts from the repo's HEAD, so uncommitted changes in the repo would
silently be missing from it: a dirty repo is refused when a worktree is created.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable
from itertools import combinations
from pathlib import Path

import anyio.to_thread

from supervisor.gitbase import record_base
from supervisor.spec import Config, LoopSpec


class WorktreeError(Exception):
    """A worktree cannot be created or removed (not a repo, dirty, git failed)."""


def _git(args: list[str], cwd: Path) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WorktreeError(f"git {' '.join(args)}: {exc}") from exc
    if out.returncode != 0:
        raise WorktreeError(f"git {' '.join(args)} in {cwd}: {out.stderr.strip() or out.stdout}")
    return out.stdout


def branch_name(loop: LoopSpec) -> str:
    assert loop.worktree is not None
    return loop.worktree.branch.format(loop=loop.name)


def ensure_worktree(loop: LoopSpec) -> bool:
    """Create the loop's worktree if it is missing; True when it was created now."""
    wt = loop.worktree
    if wt is None:
        return False
    path = loop.workspace
    if (path / ".git").exists():
        return False
    try:
        _git(["rev-parse", "--show-toplevel"], wt.repo)
    except WorktreeError:
        raise WorktreeError(f"loop {loop.name!r}: {wt.repo} is not a git repository") from None
    dirty = _git(["status", "--porcelain", "--untracked-files=no"], wt.repo).strip()
    if dirty:
        first = dirty.splitlines()[0].strip()
        raise WorktreeError(
            f"loop {loop.name!r}: {wt.repo} has uncommitted changes ({first} …) that its new "
            "worktree would not contain; commit or stash them first"
        )
    branch = branch_name(loop)
    path.parent.mkdir(parents=True, exist_ok=True)
    exists = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
        cwd=wt.repo,
        capture_output=True,
        check=False,
    )
    if exists.returncode == 0:
        _git(["worktree", "add", str(path), branch], wt.repo)
    else:
        _git(["worktree", "add", "-b", branch, str(path), "HEAD"], wt.repo)
        record_base(wt.repo, branch)  # what `loopvisor diff LOOP` compares against
    return True


def prepare_worktrees(config: Config) -> list[str]:
    """Create every missing worktree of the config; returns a line per creation."""
    created = []
    for loop in config.loops:
        if ensure_worktree(loop):
            created.append(f"{loop.name}: worktree {loop.workspace} on branch {branch_name(loop)}")
    return created


def remove_worktree(loop: LoopSpec, *, delete_branch: bool = False) -> str:
    wt = loop.worktree
    if wt is None:
        raise WorktreeError(f"loop {loop.name!r} has no worktree")
    branch = branch_name(loop)
    if loop.workspace.exists():
        _git(["worktree", "remove", "--force", str(loop.workspace)], wt.repo)
        msg = f"{loop.name}: removed worktree {loop.workspace}"
    else:
        _git(["worktree", "prune"], wt.repo)
        msg = f"{loop.name}: no worktree at {loop.workspace} (pruned stale entries)"
    if not delete_branch:
        return f"{msg}; branch {branch} kept"
    if not _git(["branch", "--list", branch], wt.repo).strip():
        return f"{msg}; no branch {branch} to delete"
    _git(["branch", "-D", branch], wt.repo)
    return f"{msg}; deleted branch {branch}"


def changed_files(loop: LoopSpec) -> set[str]:
    """Files a loop's worktree changed since it branched off the repo's HEAD:
    committed on its branch, staged, modified or untracked."""
    path = loop.workspace
    if loop.worktree is None or not (path / ".git").exists():
        return set()
    files: set[str] = set()
    for line in _git(["status", "--porcelain", "--untracked-files=all"], path).splitlines():
        files.add(line[3:].split(" -> ")[-1])
    repo_head = _git(["rev-parse", "HEAD"], loop.worktree.repo).strip()
    base = _git(["merge-base", "HEAD", repo_head], path).strip()
    files.update(_git(["diff", "--name-only", base, "HEAD"], path).split())
    return files


def overlaps(changes: dict[str, set[str]]) -> Iterable[tuple[str, str, set[str]]]:
    """Pairs of loops whose worktrees changed the same files."""
    for (a, fa), (b, fb) in combinations(sorted(changes.items()), 2):
        common = fa & fb
        if common:
            yield a, b, common


class OverlapChecker:
    """After each iteration of a worktree loop, warn (once per file) when two loops'
    worktrees changed the same file: their branches will conflict on merge."""

    def __init__(self, loops: list[LoopSpec], notice: Callable[[str, str], None]) -> None:
        self.loops = [spec for spec in loops if spec.worktree is not None]
        self._notice = notice
        self._warned: set[tuple[str, str, str]] = set()

    @property
    def active(self) -> bool:
        return len(self.loops) >= 2

    async def check(self, loop: str) -> None:
        if not self.active or loop not in {spec.name for spec in self.loops}:
            return
        try:
            changes = await anyio.to_thread.run_sync(
                lambda: {spec.name: changed_files(spec) for spec in self.loops}
            )
        except WorktreeError as exc:
            self._notice(loop, f"overlap check failed: {exc}")
            return
        for a, b, common in overlaps(changes):
            new = sorted(f for f in common if (a, b, f) not in self._warned)
            if new:
                self._warned.update((a, b, f) for f in new)
                more = f" (+{len(new) - 5} more)" if len(new) > 5 else ""
                self._notice(
                    loop,
                    f"worktrees of {a} and {b} both changed {', '.join(new[:5])}{more}: "
                    "expect merge conflicts",
                )
