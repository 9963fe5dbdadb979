"""Pipelines: a loop with `after` starts only once the loops it follows have ended.

While it waits its state is `waiting`, its reason `after lint-fix` (shown as "waiting:
after lint-fix" by status and the console). When they all succeeded it starts; when one did not,
`on_failure = "skip"` ends it `stopped` ("skipped: lint-fix failed") and `"run"` starts
it anyway. Its prompt's `$after_output` is what they ended with (state, reason and
their agent's last output), and a worktree with `base = "loop:lint-fix"` is made now,
from that loop's branch as it ended (`worktree.ensure_worktree`).

A wait on a loop that waits for a person (stuck, paused) is a wait for a person too
(`waits_for_person`): a headless run ends there with exit code 4, as it would for the
upstream loop alone. A stop cancels the wait (it runs in the loop's stop scope).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from supervisor.turn import LAST_OUTPUT_LIMIT
from supervisor.worktree import WorktreeError, ensure_worktree

if TYPE_CHECKING:
    from supervisor.loop_state import LoopStatus

WAITING_AFTER = "after "
"""Its reason while it waits: with the state, "waiting: after lint-fix"."""


async def wait_after(runner: LoopStatus) -> bool:
    """Wait for the loops `runner` follows; False when it ended (skipped, no worktree)."""
    upstream = runner.upstream
    if not upstream or runner.finished:
        return True
    names = ", ".join(u.spec.name for u in upstream)
    if not all(u.done for u in upstream):
        runner.set_state("waiting", f"{WAITING_AFTER}{names}")
        for up in upstream:
            while not up.done:
                await up.state_changed()
    failed = [u for u in upstream if u.state != "succeeded"]
    if failed and runner.spec.on_failure == "skip":
        ended = ", ".join(f"{u.spec.name} {u.state}" for u in failed)
        runner._end("stopped", f'skipped: {ended} (on_failure = "skip")')
        return False
    runner.after_output = after_output(upstream)
    wt = runner.spec.worktree
    if wt is not None and wt.after_loop is not None:
        try:
            await anyio.to_thread.run_sync(ensure_worktree, runner.spec)
        except WorktreeError as exc:
            runner._end("failed", f"cannot make its worktree from {wt.after_loop}'s branch: {exc}")
            return False
    if runner.state == "waiting":
        runner.set_state("pending", f"after {names}: starting")
    return True


def after_output(upstream: tuple[LoopStatus, ...]) -> str:
    """`$after_output`: per upstream loop how it ended and its agent's last output."""
    parts = []
    for up in upstream:
        tail = up.last_output[-LAST_OUTPUT_LIMIT // max(1, len(upstream)) :].strip()
        parts.append(f"## {up.spec.name}: {up.state} — {up.reason}\n{tail or '(no output)'}")
    return "\n\n".join(parts)


def waits_for_person(runner: LoopStatus) -> bool:
    """It waits for a person, or for a loop that waits for one (see the docstring)."""
    if runner.needs_attention:
        return True
    going = [a for a in runner.attempts if not a.done]
    if going:  # a race waits for a person when every attempt still going does
        return all(waits_for_person(a) for a in going)
    waiting = runner.state == "waiting" and runner.reason.startswith(WAITING_AFTER)
    return waiting and any(not u.done and waits_for_person(u) for u in runner.upstream)
