"""A worktree loop's changes as a patch: `loopvisor diff`, the `diff` op, the console's `d`.

Two ranges: the loop's whole work is its branch's tip against its base (the commit its
worktree was created from: `gitbase`), read from the repo, so it works after the
worktree is gone and does not change when the repo's own branch moves; one iteration's
is its checkpoint commit against the HEAD it began from (`checkpoint.py`, recorded in
the journal). What the worktree holds uncommitted (the iteration running now) is in
neither, and the note says so.

The command line streams git's patch as it comes (`open_patch`: byte for byte when
piped, so `| git apply` applies it); the console and the socket get `loop_diff`, read
no further than `sizes.DIFF_MAX_BYTES`, with a marker line where it was cut.
`line_kinds` tells file headers, hunk headers, added and removed lines apart, for
whatever colours them (the console, the command line on a terminal).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from supervisor.api import LoopDiff
from supervisor.gitbase import base_commit
from supervisor.gitexec import PATCH_OPTIONS, GitError, argv, git_env, git_sync
from supervisor.sizes import DIFF_MAX_BYTES, format_size
from supervisor.spec import LoopSpec
from supervisor.textsafe import decode
from supervisor.worktree import branch_name


class DiffError(Exception):
    """There is nothing to diff: not a worktree loop, no branch yet, git failed."""


# -- ranges ----------------------------------------------------------------------------
def _repo(loop: LoopSpec) -> Path:
    if loop.worktree is None:
        raise DiffError(f"loop {loop.name!r} has no git worktree: there is no diff to show")
    return loop.worktree.repo


def _verified(repo: Path, rev: str) -> str | None:
    found = git_sync(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=repo)
    return found.out.strip() or None if found.ok else None


def branch_range(loop: LoopSpec) -> tuple[str, str]:
    """(base, tip) of the loop's branch; DiffError when it has no branch yet."""
    repo, branch = _repo(loop), branch_name(loop)
    try:
        tip = _verified(repo, f"refs/heads/{branch}")
        if tip is None:
            raise DiffError(f"loop {loop.name!r} has no branch {branch} in {repo}: has it run?")
        base = base_commit(repo, branch)
    except GitError as exc:
        raise DiffError(str(exc)) from None
    if base is None:
        raise DiffError(f"cannot tell where branch {branch} started in {repo}")
    return base, tip


def commit_range(loop: LoopSpec, parent: str | None, commit: str) -> tuple[str, str]:
    """(parent, commit) of one iteration; its parent defaults to the commit's first."""
    repo = _repo(loop)
    try:
        right = _verified(repo, commit)
        left = _verified(repo, parent if parent else f"{commit}^")
    except GitError as exc:
        raise DiffError(str(exc)) from None
    if right is None or left is None:
        missing = commit if right is None else parent or f"{commit}^"
        raise DiffError(f"commit {missing[:12]} is not in {repo} (the branch was rewritten?)")
    return left, right


def patch_args(left: str, right: str, *, binary: bool) -> list[str]:
    return ["diff", *PATCH_OPTIONS, *(["--binary"] if binary else []), left, right, "--"]


# -- reading ---------------------------------------------------------------------------
@contextmanager
def open_patch(loop: LoopSpec, left: str, right: str, *, binary: bool) -> Iterator[IO[bytes]]:
    """git's patch as a stream, read as git writes it (no size limit: a person or `git
    apply` reads it); git is killed if the reader stops early. DiffError when git fails."""
    import tempfile  # here, not at every start of `run` (issue 12)

    with (
        tempfile.TemporaryFile() as errors,  # a file: it never fills up and blocks git
        subprocess.Popen(
            argv(patch_args(left, right, binary=binary)),
            cwd=_repo(loop),
            env=git_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
        ) as proc,
    ):
        assert proc.stdout is not None
        try:
            yield proc.stdout
        finally:
            if proc.poll() is None:
                proc.kill()
        code = proc.wait()
        errors.seek(0)
        err = decode(errors.read(64 * 1024)).strip()
    if code != 0:
        raise DiffError(f"git diff: {err.splitlines()[-1] if err else f'exit {code}'}")


def _read_patch(repo: Path, left: str, right: str, limit: int) -> tuple[str, int | None]:
    """The patch's first `limit` bytes, and None when that is all of it, else how many
    bytes git had written by the time it was stopped (at least limit + 1)."""
    with subprocess.Popen(
        argv(patch_args(left, right, binary=False)),
        cwd=repo,
        env=git_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        assert proc.stdout is not None
        data = proc.stdout.read(limit + 1)
        more = len(data) > limit
        if more:
            proc.kill()
        code = proc.wait()
    if code != 0 and not more:
        raise DiffError(f"git diff {left[:12]} {right[:12]} failed (exit {code})")
    if not more:
        return decode(data), None
    cut = data.rfind(b"\n", 0, limit) + 1 or limit
    return decode(data[:cut]), len(data)


def _stat(repo: Path, left: str, right: str) -> str:
    found = git_sync(["diff", "--shortstat", "--no-ext-diff", left, right, "--"], cwd=repo)
    return found.out.strip() if found.ok else ""


def uncommitted_paths(loop: LoopSpec) -> int:
    """Paths the loop's worktree holds uncommitted (0 when there is no worktree)."""
    if not (loop.workspace / ".git").exists():
        return 0
    found = git_sync(["status", "--porcelain", "--untracked-files=all"], cwd=loop.workspace)
    return len(found.out.splitlines()) if found.ok else 0


def loop_diff(
    loop: LoopSpec,
    *,
    iteration: int | None = None,
    commit: tuple[str | None, str] | None = None,
    limit: int = DIFF_MAX_BYTES,
) -> LoopDiff:
    """The whole diff (no `iteration`) or iteration `iteration`'s, whose checkpoint is
    `commit` = (parent, commit), or None when it made none. Blocking (git): run it in a
    worker thread. DiffError when there is nothing to compare."""
    name = loop.name
    if iteration is not None and commit is None:
        return LoopDiff(
            loop=name,
            iteration=iteration,
            base=None,
            head=None,
            note=f"iteration {iteration} made no checkpoint commit: it changed no file",
        )
    left, right = branch_range(loop) if commit is None else commit_range(loop, commit[0], commit[1])
    repo = _repo(loop)
    try:
        text, written = _read_patch(repo, left, right, limit)
        stat = _stat(repo, left, right)
        pending = uncommitted_paths(loop) if iteration is None else 0
    except GitError as exc:
        raise DiffError(str(exc)) from None
    where = f"`loopvisor diff {name}{'' if iteration is None else f' --iteration {iteration}'}`"
    if written is not None:
        text += (
            f"✂ the rest of this diff is left out here: it is over {format_size(limit)};"
            f" {where} prints all of it\n"
        )
    notes = []
    if not text:
        notes.append("no changes")
    if pending:
        notes.append(
            f"the worktree has {pending} uncommitted path{'s' if pending != 1 else ''}"
            " (the iteration running now): not in this diff"
        )
    return LoopDiff(
        loop=name,
        iteration=iteration,
        base=left,
        head=right,
        stat=stat,
        text=text,
        note="; ".join(notes),
        truncated=written is not None,
    )
