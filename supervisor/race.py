"""A race (best-of-N): the race loop's task while its attempts run, and its decision.

Config turns `race = 3` on loop `fix` into `fix` and its attempts `fix.1`…`fix.3`
(`config/_race.py`), ordinary worktree loops of the run with their own runners,
driven by the run's task group like any loop and journalled like any loop; each
attempt's ledger has the race's ledger as its parent, so the race's limits bound
what the attempts spend together (a turn reserves from the whole chain).

The race loop runs no agent. It waits for its attempts' state changes and decides:

- without a score: the first attempt that succeeded (its checks passed) wins;
- with a score (a metric loop): once every attempt ended, the best score wins;
- at `race_deadline`: the attempts still going are cut off, and the best score (or,
  without one, nobody) wins.

The others are cut off at once (`force_end`: their turn's scope is cancelled, which
kills its process group and releases its reservation; they end `stopped`, "lost the
race: fix.2 won", with what they spent until then). The winner's tip becomes the
race's branch (`loopvisor/fix` is reset to it in the race's own worktree), so
`land`, `diff`, `on_success` and a pipeline's `base = "loop:fix"` work on it, and the
race loop ends `succeeded` with a reason naming the winner and every attempt's cost.

Resume: attempts are journalled loops, so a kill -9 mid-race resumes those still
going; a decided race (its loop ended) is not run again; a race whose winner had
succeeded before the kill is decided at once, before any loser starts again (the
race loop's task starts before its attempts').
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio

from supervisor.durations import format_duration
from supervisor.score import show
from supervisor.spec import LoopSpec
from supervisor.worktree import WorktreeError, branch_name, git

if TYPE_CHECKING:
    from supervisor.loop import LoopRunner


async def run_race(race: LoopRunner) -> None:
    """Wait for the race to be decided and settle it (the race loop's stop scope
    cancels the wait: then its attempts are stopped too)."""
    attempts = race.attempts
    decided = False
    try:
        winner = _winner(race)
        if winner is None and not all(a.done for a in attempts):
            names = ", ".join(a.spec.name for a in attempts)
            race.set_state("running", f"race of {len(attempts)} attempts: {names}")
            deadline = race.spec.race_deadline
            left = None if deadline is None else (race.started_at or time.time()) + deadline
            with anyio.move_on_after(None if left is None else max(0.0, left - time.time())):
                while (winner := _winner(race)) is None and not all(a.done for a in attempts):
                    await _any_change(attempts)
            if winner is None and not all(a.done for a in attempts):
                for a in attempts:  # the deadline: the best score so far may still win
                    a.force_end("stopped", f"race deadline ({format_duration(deadline or 0)})")
        winner = winner or _best_scored(race)
        decided = True
        await _decide(race, winner)
    finally:
        if not decided:
            for a in attempts:
                a.force_end("stopped", f"the race {race.spec.name} was stopped")


async def _decide(race: LoopRunner, winner: LoopRunner | None) -> None:
    lost = f"lost the race: {winner.spec.name} won" if winner else "the race was decided"
    for a in race.attempts:
        if a is not winner and not a.finished:
            a.force_end("stopped", lost)
    costs = "; ".join(_cost(a) for a in race.attempts)
    if winner is None:
        why = "; ".join(f"{a.spec.name} {a.state}: {a.reason}" for a in race.attempts)
        race._end("failed", f"no attempt won: {why} (cost: {costs})")
        return
    try:
        tip = await anyio.to_thread.run_sync(adopt, race.spec, winner.spec)
    except WorktreeError as exc:
        race._end("failed", f"{winner.spec.name} won, but its branch could not be taken: {exc}")
        return
    race.last_output = winner.last_output
    n = race.attempts.index(winner) + 1
    best = winner.scores.best if winner.scores else None
    how = winner.reason if best is None else f"best score {show(best.score)}; {winner.reason}"
    race._end(
        "succeeded",
        f"attempt {n} ({winner.spec.name}, agent {winner.spec.agent}) won at {tip[:12]}: "
        f"{how} (cost: {costs})",
    )


def _cost(a: LoopRunner) -> str:
    r = a.result()
    return f"{a.spec.name} {r.state} {r.tokens} tokens ${r.usd:.4f}"


def _winner(race: LoopRunner) -> LoopRunner | None:
    """Without a score, the first attempt that succeeded; with one, the best score once
    every attempt ended; None while undecided."""
    if race.spec.score is None:
        done = [a for a in race.attempts if a.state == "succeeded"]
        return min(done, key=lambda a: a.ended_at or 0.0) if done else None
    if all(a.done for a in race.attempts):
        return _best_scored(race)
    return None


def _best_scored(race: LoopRunner) -> LoopRunner | None:
    """The attempt with the best score (None: no score, or no attempt has one)."""
    score = race.spec.score
    if score is None:
        return None
    scored = [
        (a.scores.best.score, a)
        for a in race.attempts
        if a.scores and a.scores.best and a.scores.best.score is not None
    ]
    if not scored:
        return None
    pick = max if score.direction == "max" else min
    return pick(scored, key=lambda pair: pair[0] or 0.0)[1]


async def _any_change(attempts: tuple[LoopRunner, ...]) -> None:
    """Return at the next state change of any attempt."""
    changes = [a.state_change() for a in attempts]  # taken now, before any task runs
    async with anyio.create_task_group() as tg:

        async def one(change: anyio.Event) -> None:
            await change.wait()
            tg.cancel_scope.cancel()

        for change in changes:
            tg.start_soon(one, change)


def adopt(race: LoopSpec, attempt: LoopSpec) -> str:
    """Point the race's branch at the attempt's tip, in the race's own worktree (which
    no agent touches): blocking, git. Returns the tip."""
    assert race.worktree is not None
    tip = git(["rev-parse", f"refs/heads/{branch_name(attempt)}^{{commit}}"], race.worktree.repo)
    tip = tip.strip()
    git(["reset", "--quiet", "--hard", tip], race.workspace)
    return tip
