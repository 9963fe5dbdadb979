"""Fork a worktree loop from its iteration N: a new loop that starts where the parent
was at the end of that iteration (`loopvisor fork`, the `fork` control op, `f` on the
console's history screen).

What the fork gets:

- **Files:** a new branch `loopvisor/NEW` (the parent's branch pattern with the new
  name) and its worktree, made at the commit that was the parent's branch tip at the
  end of iteration N: that iteration's checkpoint commit, or, when it changed nothing,
  the nearest earlier one, or the parent's base when no iteration up to N changed
  anything. That commit is recorded as the fork's base (`gitbase`): `loopvisor diff
  NEW` shows what the fork did; `land` merges it into the branch the parent's
  worktree was made from.
- **Conversation:** what the parent's agent had after iteration N, where the agent
  can take it: an API agent gets the journalled messages; Claude Code resumes the
  session with `--resume SESSION --fork-session` on its first turn (a new session id
  from then on). A Claude Code session grows in place (resuming keeps its id), so
  when the parent went on after N, that session also holds its later turns: the fork
  cuts it at iteration N's last assistant message (`--resume-session-at UUID`, a
  hidden flag of the CLI 2.1.332 pinned by `test_real_cli_resume_session_at_...`;
  the `uuid` is journalled with each iteration's `session` event). A journal from
  before that has no uuid: the fork resumes the whole session, and its transcript
  says so. Stepping into the fork before its first turn passes the same flags, but
  the interactive CLI accepts `--resume-session-at` without cutting there (measured
  on a pty), so step-in warns. `$last_output` and
  `$check_output` are those after iteration N, so the fork's first prompt is the one
  the parent's iteration N+1 had (or the fork's own template, `--prompt-file`).
- **Budget:** the parent's loop budget and max_iterations, fresh (the global budget
  is shared as by every loop); iterations numbered from 1; no schedule.

Refused: a loop without a worktree (its files at iteration N were never kept), an
iteration the journal does not have or that is still running, a name that is taken
(a loop of the run, or a branch or directory that already exists).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import TYPE_CHECKING

from supervisor.agents.base import forks_sessions
from supervisor.config.rules import LOOP_NAME
from supervisor.events import LoopForked, Notice
from supervisor.gitbase import base_commit, record_base
from supervisor.journal.forks import ForkPoint
from supervisor.spec import LoopSpec
from supervisor.worktree import (
    BASE_KEY,
    WorktreeError,
    branch_name,
    git,
    has_ref,
    mark_setup_pending,
    recorded_base,
)

if TYPE_CHECKING:
    from supervisor.loop import LoopRunner

NAME_MAX = 100


class ForkError(Exception):
    """The fork was refused; the message says why and what to do instead."""


def default_name(parent: str, iteration: int, taken: Collection[str]) -> str:
    """`PARENT-forkN`, then `PARENT-forkN-2`, ... until one is free."""
    name = f"{parent}-fork{iteration}"
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def check_request(parent: LoopSpec, name: str, taken: Collection[str]) -> None:
    """ForkError unless `parent` can be forked under `name` (before git is asked)."""
    if parent.worktree is None:
        raise ForkError(
            f"loop {parent.name!r} has no worktree: a fork starts from an iteration's "
            "checkpoint commit, which only worktree loops make "
            '(workspace = { repo = ".", worktree = true })'
        )
    if len(name) > NAME_MAX or not LOOP_NAME.fullmatch(name):
        raise ForkError(f'"{name}" is not a valid loop name: use letters, digits, _ . -')
    if name in taken:
        raise ForkError(f"a loop named {name!r} exists in this run: choose another name")


def fork_spec(parent: LoopSpec, event: LoopForked) -> LoopSpec:
    """The fork's loop: the parent's, under its own name, worktree and branch."""
    wt = parent.worktree
    assert wt is not None
    branch = wt.branch if "{loop}" in wt.branch else "loopvisor/{loop}"
    prompt = event.prompt if event.prompt is not None else parent.prompt
    return dataclasses.replace(
        parent,
        name=event.loop,
        prompt=prompt,
        prompt_file=None if event.prompt is not None else parent.prompt_file,
        workspace=parent.workspace.parent / event.loop,
        worktree=dataclasses.replace(
            wt, branch=branch, base=event.commit, include_uncommitted=False
        ),
        schedule=None,
        max_runs=None,
    )


def start_commit(parent: LoopSpec, point: ForkPoint) -> str:
    """The commit the fork starts at: the parent's branch tip after iteration N."""
    if point.commit is not None:
        return point.commit
    assert parent.worktree is not None
    try:
        base = base_commit(parent.worktree.repo, branch_name(parent))
    except Exception as exc:  # GitError, OSError: git could not say
        raise ForkError(f"{parent.name}: cannot find the base of its branch: {exc}") from None
    if base is None:
        raise ForkError(
            f"{parent.name}: iteration {point.iteration} and those before it made no commit"
            f" and the base of {branch_name(parent)} is unknown: nothing to fork from"
        )
    return base


def forked_event(
    parent: LoopSpec, name: str, point: ForkPoint, *, prompt: str | None = None
) -> LoopForked:
    """The record of the fork (run `make_worktree` on it next)."""
    if point.outcome is None:
        raise ForkError(
            f"{parent.name}: iteration {point.iteration} is still running: fork it once it ended"
        )
    return LoopForked(
        loop=name,
        parent=parent.name,
        iteration=point.iteration,
        commit=start_commit(parent, point),
        prompt=prompt,
        session_id=point.session_id,
        session_at=point.session_at,
        conversation=point.conversation,
        last_output=point.last_output,
        check_output=point.check_output,
    )


def make_worktree(parent: LoopSpec, fork: LoopSpec, commit: str) -> None:
    """Create the fork's branch at `commit` and its worktree (blocking: run it in a
    worker thread). Refuses a branch or a directory that exists: nothing is reused."""
    wt = fork.worktree
    assert wt is not None
    assert parent.worktree is not None
    repo, branch, path = wt.repo, branch_name(fork), fork.workspace
    try:
        if has_ref(repo, f"refs/heads/{branch}"):
            raise ForkError(f"branch {branch} exists in {repo}: choose another name")
        if path.exists():
            raise ForkError(f"{path} exists: choose another name (or `loopvisor clean` it)")
        path.parent.mkdir(parents=True, exist_ok=True)
        git(["worktree", "add", "--no-track", "-b", branch, str(path), commit], repo)
        # Lands where the parent lands; its own work is what came after `commit`.
        target, _ = recorded_base(parent.worktree.repo, branch_name(parent))
        git(["config", f"branch.{branch}.{BASE_KEY}", target or commit], repo)
        record_base(repo, branch)
        if fork.setup:
            mark_setup_pending(path)
    except WorktreeError as exc:
        raise ForkError(f"{fork.name}: {exc}") from None


def whole_session(event: LoopForked) -> str:
    """What the transcript says when the parent's journal has no message to cut its
    session at (written before loopvisor journalled it)."""
    return (
        f"the journal has no message id for {event.label}'s session (an older journal): the "
        "fork resumes the whole session, so it also holds the parent's turns after "
        f"iteration {event.iteration}"
    )


def seed_fork(runner: LoopRunner, event: LoopForked) -> None:
    """Give a new fork's runner the parent's conversation and feedback after iteration N."""
    agent = runner.agent
    if event.session_id is not None and forks_sessions(agent):
        agent.fork_session(event.session_id, event.session_at)
        if event.session_at is None:
            runner.emit(Notice(loop=event.loop, level="warning", message=whole_session(event)))
    else:
        agent.restore(event.session_id, event.conversation)
    runner.last_output, runner.check_output = event.last_output, event.check_output
