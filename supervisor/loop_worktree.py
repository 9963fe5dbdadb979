"""A loop's git side around its iterations: the worktree's setup before the first,
a checkpoint commit under each iteration's outcome, the landing after success.

The iteration's `IterationFinished` is published here, after its commit and with
the commit's id, so the journal never holds a commit without its row (or a row
naming a commit that is not there). The hooks themselves are `landing.Landing`
(setup, `on_success`) and `checkpoint.Checkpointer`; this module is when the loop
calls them and what it does with their answer.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio

from supervisor import events as ev
from supervisor.checkpoint import Checkpoint
from supervisor.durations import format_duration
from supervisor.loop_state import Control
from supervisor.score import Judgement
from supervisor.turn import TurnResult

if TYPE_CHECKING:
    from supervisor.loop import LoopRunner


async def set_up(runner: LoopRunner) -> bool:
    """Run the worktree's `setup` commands if they are due; False: the loop failed."""
    if runner.worktree is None or runner.finished:
        return True
    problem = await runner.worktree.set_up(runner, runner._loopvisor_env(0, "setup"))
    if problem is not None:
        runner._end("failed", problem)
        return False
    return True


async def after_success(runner: LoopRunner) -> bool:
    """`on_success` once the loop succeeded. A landing that fails is a notice and a
    pause: resume tries again, stop ends it succeeded but not landed, a landing by
    hand (`land` op) settles it. True when the operator restarted it meanwhile."""
    if not runner._land_due or runner.state != "succeeded" or runner.worktree is None:
        runner._land_due = False
        return False
    succeeded, mode = runner.reason, runner.spec.on_success
    runner.emit(ev.LandingStarted(loop=runner.spec.name, mode=mode, succeeded=succeeded))
    while True:
        message, finished = await runner.worktree.on_success(runner.spec)
        if finished is not None:
            runner._land_due = False
            runner.emit(ev.Notice(loop=runner.spec.name, message=message))
            runner.emit(finished)
            runner._end("succeeded", f"{succeeded}; {message}")
            return False
        runner.emit(ev.Notice(loop=runner.spec.name, level="error", message=message))
        runner.set_state("paused", f"{succeeded}, but {message} (resume: try again)")
        runner.control = Control()
        runner._landing_failed = True
        try:
            await runner.control.resumed.wait()
        finally:
            runner._landing_failed = False
        if runner.control.restart:
            return True
        if runner._landed_by_hand or runner.control.stop:
            done = runner._landed_by_hand or "not landed: stopped by the operator"
            landed = ev.LandingFinished(
                loop=runner.spec.name, mode=mode, landed=bool(runner._landed_by_hand), message=done
            )
            runner.emit(landed)
            runner._land_due, runner._landed_by_hand = False, ""
            runner._end("succeeded", f"{succeeded}; {done}")
            return False
        runner.set_state("succeeded", succeeded)


async def finish_iteration(
    runner: LoopRunner,
    n: int,
    outcome: ev.IterationOutcome,
    reason: str,
    turn: TurnResult,
    started: float,
    judged: Judgement | None = None,
) -> None:
    """Journal the iteration's outcome, after its checkpoint commit (worktree loops):
    shielded, so that a stop or a budget cut arriving meanwhile cannot leave a commit
    without its row, nor a git command killed half-way. A metric loop's iteration
    that was not kept (`judged`) is reverted to the best commit before the row is
    written, so the row says where the branch is."""
    runner._open_iteration = runner._open_turn = None
    point = Checkpoint()
    if runner.checkpointer is not None:
        with anyio.CancelScope(shield=True):
            point = await runner.checkpointer.commit(
                n,
                outcome,
                reason,
                tokens=turn.tokens,
                usd=turn.usd,
                env=runner._loopvisor_env(n, "git"),
            )
    reverted: str | None = None
    if judged is not None and runner.scores is not None:
        with anyio.CancelScope(shield=True):
            reverted, head = await _keep_best(runner, n, judged, point)
        runner.scores.record(n, judged, head)
        if reverted is not None:
            reason = f"{reason}; reverted to {reverted[:12]}"
    runner.emit(
        ev.IterationFinished(
            loop=runner.spec.name,
            iteration=n,
            outcome=outcome,
            reason=reason,
            tokens=turn.tokens,
            usd=round(turn.usd, 6),
            duration_s=round(time.monotonic() - started, 3),
            session_id=runner.agent.session_id,
            commit=point.commit,
            commit_parent=point.parent,
            score=judged.score if judged is not None else None,
            kept=judged.kept if judged is not None else None,
            reverted_to=reverted,
        )
    )


async def _keep_best(
    runner: LoopRunner, n: int, judged: Judgement, point: Checkpoint
) -> tuple[str | None, str | None]:
    """(the commit a worse iteration was reverted to, the branch's head after it);
    (None, None) for a loop without a worktree, which has nothing to revert."""
    if runner.checkpointer is None or runner.scores is None:
        return None, None
    if judged.kept:
        return None, point.commit or point.parent
    best = runner.scores.best_head or point.parent
    if best is None:
        return None, None
    moved = point.commit is not None and point.commit != best
    if not moved and point.parent == best:  # it changed nothing: nothing to undo
        return None, best
    done = await runner.checkpointer.revert(best, runner._loopvisor_env(n, "git"))
    return (best if done else None), best


async def finish_cut_off(runner: LoopRunner, n: int) -> None:
    """An iteration cancelled before its outcome (an operator stop, a budget, the run
    shut down by Ctrl-C or SIGTERM): its checkpoint commit still takes what the agent
    changed, outcome `stopped` and why, so that nothing it wrote is lost, with what
    its turn was charged until then (the ledger has it too)."""
    started = runner._open_iteration
    assert started is not None
    if runner.control.stop:
        reason = "stopped by the operator"
    elif runner.finished:  # force_end: the global budget, a shutdown
        reason = runner.reason
    else:
        reason = _wall_used_up(runner) or "cut off mid-turn"
    turn = runner._open_turn or TurnResult()
    await finish_iteration(runner, n, "stopped", f"cut off mid-turn: {reason}", turn, started)


def _wall_used_up(runner: LoopRunner) -> str | None:
    """The loop's wall budget's reason once it is used up; else None."""
    wall = runner.spec.budget.limits.wall
    if wall is None or time.time() < (runner.started_at or time.time()) + wall:
        return None
    return f"loop wall budget ({format_duration(wall)}) used up"
