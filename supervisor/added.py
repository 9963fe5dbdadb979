"""Start a new loop in a running supervisor, made like one of its loops (the `add`
control op: `loopvisor ctl add NAME --like LOOP`, the MCP tool `start_loop`).

The shape is chosen with an attacker in mind. Whoever holds the control socket (a
person, a script, a model driving it through `loopvisor mcp`) names only the new
loop, the existing loop it is like, and what an `edit` could change anyway: its
prompt, `max_iterations` and budget limits. Its agent (and so the command an agent
runs), checks, setup commands, environment, workspace kind, stuck and landing
settings are the like-loop's, which loops.toml defined. No new agent definition or
check command travels over the socket, so adding a loop never makes the supervisor
run a program the config did not already name.

What the new loop gets:

- **Workspace:** a worktree like-loop's copy gets its own worktree and branch (the
  like-loop's branch pattern with the new name, `loopvisor/{loop}` when the pattern
  has no `{loop}`), made by the op from the like-loop's `base` (its configured one,
  else the ref the like-loop's branch was made from), as a loops.toml loop's is. A
  loop without a worktree works in the like-loop's directory.
- **Fresh state:** iteration 1, no conversation, its own loop budget (the global one
  is shared as by every loop), no schedule.

Refused: an unknown like-loop, a name that is not a valid loop name
(`config.rules.loop_name_problem`) or is taken (a loop of the run, or, for a worktree
loop, a branch or directory that already exists: nothing is reused), and what
`edit` refuses (an invalid prompt, a limit that is not positive).

`LoopAdded` records it (journalled before its first event) with the values it was
given, so `--resume` rebuilds it from the like-loop as it does a fork from its parent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from supervisor.config.rules import edit_problems, loop_name_problem
from supervisor.events import LoopAdded
from supervisor.spec import Limits, LoopSpec
from supervisor.worktree import (
    WorktreeError,
    branch_name,
    ensure_worktree,
    has_ref,
    recorded_base,
)


class AddError(Exception):
    """The loop was not added; the message says why and what to do instead."""


def added_event(
    like: LoopSpec,
    name: str,
    taken: Collection[str],
    *,
    prompt: str | None = None,
    max_iterations: int | None = None,
    limits: Limits | None = None,
) -> LoopAdded:
    """The record of a loop `name` like `like` (None: the like-loop's value), or
    AddError (before git is asked: `check_free` next)."""
    problem = loop_name_problem(name)
    if problem is not None:
        raise AddError(problem)
    if name in taken:
        raise AddError(f"a loop named {name!r} exists in this run: choose another name")
    problems = edit_problems(prompt=prompt, max_iterations=max_iterations, limits=limits)
    if problems:
        raise AddError("; ".join(map(str, problems)))
    return LoopAdded(
        loop=name,
        like=like.name,
        prompt=like.prompt if prompt is None else prompt,
        max_iterations=like.max_iterations if max_iterations is None else max_iterations,
        limits=(like.budget.limits if limits is None else limits).to_dict(),
    )


def added_spec(like: LoopSpec, event: LoopAdded) -> LoopSpec:
    """The new loop's spec: `like`'s, under its own name, prompt, limits and worktree."""
    changes: dict[str, object] = {}
    wt = like.worktree
    if wt is not None:
        branch = wt.branch if "{loop}" in wt.branch else "loopvisor/{loop}"
        changes["workspace"] = like.workspace.parent / event.loop
        changes["worktree"] = dataclasses.replace(wt, branch=branch)
    return dataclasses.replace(
        like,
        name=event.loop,
        prompt=event.prompt,
        prompt_file=None,
        max_iterations=event.max_iterations,
        budget=dataclasses.replace(like.budget, limits=Limits.from_dict(event.limits)),
        schedule=None,
        max_runs=None,
        **changes,  # type: ignore[arg-type]
    )


def make_worktree(like: LoopSpec, spec: LoopSpec) -> None:
    """Create a worktree loop's branch and worktree (blocking: git; run it in a worker
    thread), from the ref the like-loop's branch was made from when its config names
    no `base` (so both land in the same place). AddError when the branch or the
    directory exists: a loops.toml loop would reuse them; a new one must not take over
    another's work."""
    wt = spec.worktree
    if wt is None:
        return
    assert like.worktree is not None
    branch = branch_name(spec)
    try:
        if has_ref(wt.repo, f"refs/heads/{branch}"):
            raise AddError(f"branch {branch} exists in {wt.repo}: choose another name")
        if spec.workspace.exists():
            raise AddError(
                f"{spec.workspace} exists: choose another name (or `loopvisor clean` it)"
            )
        if wt.base is None:
            target, _ = recorded_base(like.worktree.repo, branch_name(like))
            if target is not None:
                spec = dataclasses.replace(spec, worktree=dataclasses.replace(wt, base=target))
        ensure_worktree(spec)
    except WorktreeError as exc:
        raise AddError(f"{spec.name}: {exc}") from None
