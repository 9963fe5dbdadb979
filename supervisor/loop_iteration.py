"""One iteration of a loop: prompt, a compute slot, the agent turn, the checks, and
the decision on what happens next.

`run_iteration` is called by `LoopRunner` at its safe point between iterations; it
returns having published the iteration's outcome, set the loop's next state (end,
pause, stuck, retry) or, when the iteration is to run again (interrupted, a usage
limit, a retryable error), left `runner.iteration` one short. Everything here reads
and writes the runner's state (`loop_state.LoopStatus`): the runner is the state,
this is the iteration's control flow.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from supervisor import events as ev
from supervisor.agents.usagelimit import describe as describe_limit
from supervisor.budget_pause import pauses
from supervisor.checks import (
    CheckOutcome,
    check_summary,
    combined_failure,
    render_check_output,
    run_check,
)
from supervisor.loop_prompt import render_prompt
from supervisor.loop_worktree import finish_cut_off, finish_iteration
from supervisor.score import Judgement
from supervisor.stuck import StuckVerdict
from supervisor.turn import TurnResult

if TYPE_CHECKING:
    from supervisor.loop import LoopRunner

RETRY_BACKOFF_CAP_S = 30.0


async def run_iteration(runner: LoopRunner, n: int) -> None:
    """Iteration `n`, start to outcome; a cancellation (stop, budget, shutdown) still
    commits and journals what the cut-off turn changed before it goes on up."""
    spec = runner.spec
    prompt = render_prompt(runner, n)
    if prompt is None:
        return
    runner.iteration = n
    started = time.monotonic()
    runner.emit(ev.IterationStarted(loop=spec.name, iteration=n, prompt=prompt))
    got_slot = await _take_slot(runner, n)
    try:
        try:
            checked = await _in_slot(runner, n, prompt, started, got_slot)
        finally:
            if got_slot:
                runner.slots.release()
        if isinstance(checked, float):  # a retryable agent error: back off without a slot
            await _backoff(runner, n, checked)
        elif checked is not None:
            turn, outcomes = checked
            if runner.after_iteration is not None:
                await runner.after_iteration(spec.name)
            await _decide(runner, n, turn, outcomes, started)
    except anyio.get_cancelled_exc_class():
        if runner._open_iteration is not None:  # cut off mid-turn: keep what it changed
            with anyio.CancelScope(shield=True):
                await finish_cut_off(runner, n)
        raise
    if runner.iteration < n:  # it runs again: its notes are still unanswered
        runner.control.injections[:0] = runner._in_flight_notes
    runner._in_flight_notes = []
    runner.checkpoint()


async def _in_slot(
    runner: LoopRunner, n: int, prompt: str, started: float, got_slot: bool
) -> tuple[TurnResult, list[CheckOutcome]] | float | None:
    """The agent turn and the checks, while holding a compute slot. Returns what
    to decide on, a retry delay, or None when the iteration already ended."""
    # Only where a failing check could be mistaken for a loop: a digest reads the
    # workspace twice per iteration, which a loop without checks need not pay.
    watching = runner.spec.checks and (
        runner.spec.stuck.same_failure or runner.spec.stuck.same_output
    )
    watch = runner._workspace if watching else None
    if runner.checkpointer is not None and got_slot:
        await runner.checkpointer.begin(n, runner._loopvisor_env(n, "git"))
        runner._open_iteration = started
    before = await watch.take() if watch is not None and got_slot else None
    turn = await runner._turn(n, prompt) if got_slot else TurnResult()
    after = await watch.take() if watch is not None and before is not None else None
    runner._workspace_changed = after is not None and after != before
    if runner.control.restart:
        await finish_iteration(runner, n, "stopped", "restarted by the operator", turn, started)
        return None
    if runner.control.interrupt:
        reason = runner.control.interrupt_reason or "paused by the operator"
        runner.control.interrupt, runner.control.interrupt_reason = False, ""
        await finish_iteration(runner, n, "interrupted", reason, turn, started)
        runner.iteration = n - 1  # the interrupted iteration runs again on resume
        return None
    if turn.failure is not None and turn.failure.usage_limit is not None:
        # Not the loop's failure: no retry is counted, what it spent stays charged
        # once, and the iteration runs again in the same session after the reset.
        limit = turn.failure.usage_limit
        if runner.accounts is not None:
            limit = runner.accounts.block(limit)
        await finish_iteration(runner, n, "interrupted", describe_limit(limit), turn, started)
        runner.iteration = n - 1
        runner._resume_session = runner.agent.session_id is not None
        return None
    if turn.exhausted is not None and pauses(runner.ledger, turn.exhausted):
        await finish_iteration(runner, n, "interrupted", turn.exhausted, turn, started)
        runner.iteration = n - 1  # cut off by the budget: it runs again once raised
        runner._pause_for_budget(turn.exhausted)
        return None
    if turn.exhausted is not None:
        await finish_iteration(runner, n, "exhausted", turn.exhausted, turn, started)
        runner._end("exhausted", turn.exhausted)
        return None
    if turn.retries_exhausted is not None:
        await finish_iteration(runner, n, "failed", turn.retries_exhausted, turn, started)
        runner._end("failed", turn.retries_exhausted)
        return None
    if turn.stalled is not None:
        await finish_iteration(runner, n, "stuck", turn.stalled.evidence, turn, started)
        _on_stuck(runner, n, turn.stalled)
        return None
    if turn.failure is not None:
        return await _after_failure(runner, n, turn, started)
    runner.last_output = turn.output
    return turn, await _run_checks(runner, n)


async def _take_slot(runner: LoopRunner, n: int) -> bool:
    """Wait for a compute slot; False when a step-in or restart cancelled the wait
    (no turn has run, so nothing is thrown away)."""
    if runner.slots.available_tokens < 1:
        runner.set_state("waiting", "waiting for a free slot", n)
    runner._waiting_for_slot = True
    try:
        with anyio.CancelScope() as wait:
            runner._turn_scope = wait
            await runner.slots.acquire()
    finally:
        runner._waiting_for_slot = False
        runner._turn_scope = None
    if wait.cancelled_caught:
        return False
    if runner.finished:  # ended as the slot came (`force_end`: the global budget ran out
        runner.slots.release()  # while this task was on its way): no turn; the stop
        await anyio.lowlevel.checkpoint()  # scope's cancellation comes here
        return False
    if runner.control.pause or runner.control.restart:  # asked for after the slot came
        runner.slots.release()
        runner.control.interrupt = runner.control.interrupt or runner.control.pause
        return False
    runner.set_state("running", f"agent turn {n}/{runner.spec.max_iterations}", n)
    return True


async def _after_failure(
    runner: LoopRunner, n: int, turn: TurnResult, started: float
) -> float | None:
    """Count the error; None when the loop failed, else the delay before the retry."""
    failure = turn.failure
    assert failure is not None
    runner.retries_used += 1
    limit = runner.spec.budget.retries
    if not failure.retryable or runner.retries_used > limit:
        why = "not retryable" if not failure.retryable else f"{limit} retries used"
        reason = f"agent error ({why}): {failure.message}"
        await finish_iteration(runner, n, "failed", reason, turn, started)
        runner._end("failed", reason)
        return None
    await finish_iteration(runner, n, "error", failure.message, turn, started)
    runner._last_failure = failure.message
    return failure.retry_after or min(RETRY_BACKOFF_CAP_S, 0.5 * 2 ** (runner.retries_used - 1))


async def _backoff(runner: LoopRunner, n: int, delay: float) -> None:
    limit = runner.spec.budget.retries
    why = f"retry {runner.retries_used}/{limit} after: {runner._last_failure}"
    runner.set_state("waiting", why, n, delay)
    with anyio.CancelScope() as runner._backoff_scope:  # a pause ends the wait
        await anyio.sleep(delay)
    runner._backoff_scope = None
    runner.iteration = n - 1  # the same iteration runs again


async def _decide(
    runner: LoopRunner, n: int, turn: TurnResult, outcomes: list[CheckOutcome], started: float
) -> None:
    spec = runner.spec
    checks_ok = all(o.passed for o in outcomes)
    marker_ok = spec.done_marker is None or spec.done_marker in turn.output
    judged = _judge_score(runner, n, outcomes, checks_ok)
    if judged is not None and judged.done is not None:
        # Target or plateau: a plateau with a best is a success too (the branch holds
        # the best); one without any score is the loop's failure.
        has_best = judged.kept or (runner.scores is not None and runner.scores.best is not None)
        state: ev.LoopState = "succeeded" if has_best else "failed"
        await finish_iteration(runner, n, state, judged.reason, turn, started, judged)  # type: ignore[arg-type]
        runner._end(state, judged.done)
        return
    if checks_ok and marker_ok and (judged is None or spec.done_marker is not None):
        what = (
            "done marker seen"
            if not outcomes
            else "the check passed"
            if len(outcomes) == 1
            else f"all {len(outcomes)} checks passed"
        )
        if outcomes and spec.done_marker:
            what += " and done marker seen"
        if judged is not None:
            what = f"{what}; {judged.reason}"
        await finish_iteration(runner, n, "succeeded", what, turn, started, judged)
        runner._end("succeeded", f"{what} in iteration {n}")
        return
    failing = next((o for o in outcomes if not o.passed), None)
    fingerprint, evidence = combined_failure(outcomes)
    crossed = runner.ledger.crossed()
    if crossed is not None and pauses(runner.ledger, crossed.reason):
        await finish_iteration(runner, n, "continue", crossed.reason, turn, started, judged)
        runner._pause_for_budget(crossed.reason)  # the next iteration, once raised
        return
    if crossed is not None:  # nothing more can run: the budget, not the agent, ends it
        await finish_iteration(runner, n, "exhausted", crossed.reason, turn, started, judged)
        runner._end("exhausted", crossed.reason)
        return
    verdict = runner.detector.observe(
        iteration=n,
        output=turn.output,
        check_fingerprint=fingerprint,
        check_evidence=evidence,
        checks_passed=checks_ok,
        usd=turn.usd,
        tokens=turn.tokens,
        workspace_changed=runner._workspace_changed,
    )
    why = failing.summary if failing else f"done marker {spec.done_marker!r} not seen"
    if judged is not None:
        why = judged.reason if failing is None else f"{why}; {judged.reason}"
    if verdict is not None and spec.on_stuck != "continue":
        await finish_iteration(runner, n, "stuck", verdict.evidence, turn, started, judged)
        _on_stuck(runner, n, verdict)
        return
    if verdict is not None:
        _on_stuck(runner, n, verdict)
    await finish_iteration(runner, n, "continue", why, turn, started, judged)


def _judge_score(
    runner: LoopRunner, n: int, outcomes: list[CheckOutcome], checks_ok: bool
) -> Judgement | None:
    """A metric loop's verdict on iteration `n` (`score.py`); None for other loops."""
    if runner.scores is None:
        return None
    score = next((o.score for o in outcomes if o.score is not None), None)
    return runner.scores.judge(n, score, checks_ok)


def _on_stuck(runner: LoopRunner, n: int, verdict: StuckVerdict) -> None:
    action = runner.spec.on_stuck
    runner.evidence = f"{verdict.detector}: {verdict.evidence}"
    runner.emit(
        ev.StuckDetected(
            loop=runner.spec.name,
            iteration=n,
            detector=verdict.detector,
            evidence=verdict.evidence,
            action=action,
        )
    )
    if action == "pause":
        runner.set_state("stuck", runner.evidence, n)
    elif action == "stop":
        runner._end("stopped", f"stuck: {runner.evidence}")


async def _run_checks(runner: LoopRunner, n: int) -> list[CheckOutcome]:
    spec = runner.spec
    if not spec.checks:
        return []
    runner.set_state("checking", f"running {len(spec.checks)} check(s)", n)
    env = runner._loopvisor_env(n, "check")
    outcomes: list[CheckOutcome] = []
    for check in spec.checks:
        runner.emit(
            ev.CheckStarted(loop=spec.name, iteration=n, name=check.name, command=check.display)
        )
        outcome = runner.redactor.fields(await run_check(check, workspace=spec.workspace, env=env))
        if outcome.cpu_s > 0:  # charged like agent CPU: in the ledgers and the journal
            runner.ledger.charge_cpu(outcome.cpu_s)
            runner.emit(ev.UsageCharged(loop=spec.name, iteration=n, cpu_s=outcome.cpu_s))
        outcomes.append(outcome)
        runner.emit(
            ev.CheckFinished(
                loop=spec.name,
                iteration=n,
                name=outcome.name,
                passed=outcome.passed,
                exit_code=outcome.exit_code,
                summary=outcome.summary,
                output=outcome.output,
                duration_s=outcome.duration_s,
                fingerprint=outcome.fingerprint,
            )
        )
    runner.check_output = render_check_output(outcomes)
    runner.last_check, runner.last_check_passed = check_summary(
        [(o.name, o.passed, o.summary) for o in outcomes]
    )
    return outcomes
