"""The base of a loop's branch: the commit its worktree was created from.

`loopvisor diff LOOP` shows the loop's whole work against it, so it must not move
when the repo's own branch moves on (a merge of the loop's branch into it would
otherwise make the diff empty). It is recorded when the worktree creates the branch,
as the ref `refs/loopvisor/base/BRANCH` in the repo: a ref (not a reflog entry) never
expires and keeps that commit from being garbage-collected. A branch made before
loopvisor recorded bases falls back to its merge-base with the repo's HEAD.
"""

from __future__ import annotations

from pathlib import Path

from supervisor.gitexec import GitError, git_sync

BASE_REF_PREFIX = "refs/loopvisor/base/"


def base_ref(branch: str) -> str:
    return BASE_REF_PREFIX + branch


def record_base(repo: Path, branch: str) -> bool:
    """Remember the branch's tip as its base (call right after creating the branch).
    Best effort: False when git refused (the diff then falls back to the merge-base)."""
    try:
        tip = git_sync(
            ["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}"], cwd=repo
        )
        if not tip.ok:
            return False
        done = git_sync(["update-ref", base_ref(branch), tip.out.strip()], cwd=repo)
    except GitError:
        return False
    return done.ok


def base_commit(repo: Path, branch: str) -> str | None:
    """The recorded base of `branch`, else its merge-base with the repo's HEAD; None
    when neither exists (no such branch). Raises GitError when git cannot run."""
    found = git_sync(
        ["rev-parse", "--verify", "--quiet", f"{base_ref(branch)}^{{commit}}"], cwd=repo
    )
    if found.ok and found.out.strip():
        return found.out.strip()
    merged = git_sync(["merge-base", f"refs/heads/{branch}", "HEAD"], cwd=repo)
    return merged.out.strip() or None if merged.ok else None
