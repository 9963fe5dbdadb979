"""One loop's state machine: prompt → agent turn → checks → decide, until it ends.

`LoopRunner.run()` is the loop's task. One iteration is `_iteration()`; everything
the operator can do (pause, stop, restart, edit, inject) is a flag or a cancel
scope that the runner honours at a safe point, so control never races a turn.
"""

from __future__ import annotations

import string
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from supervisor import events as ev
from supervisor.agents.base import Accounted, Agent
from supervisor.agents.usagelimit import describe as describe_limit
from supervisor.budget import Charge, Ledger
from supervisor.budget_pause import paused_reason, pauses, still_short
from supervisor.checkpoint import Checkpoint, Checkpointer
from supervisor.checks import (
    CheckOutcome,
    check_summary,
    combined_failure,
    render_check_output,
    run_check,
)
from supervisor.diskfull import Gate
from supervisor.durations import format_duration
from supervisor.reaper import PROC_ENV, STATE_DIR_ENV, proc_tag
from supervisor.redact import Redactor
from supervisor.render import describe
from supervisor.sizes import OUTPUT_PER_ITERATION_DEFAULT, PROMPT_MAX_BYTES, size_of, too_large
from supervisor.spec import AgentSpec, LoopSpec, Price
from supervisor.stuck import StuckDetector, StuckVerdict
from supervisor.textsafe import valid_text
from supervisor.transcript import TranscriptTail
from supervisor.turn import LAST_OUTPUT_LIMIT, AgentTurn, TurnResult
from supervisor.usagewait import AccountWaits
from supervisor.workspace_state import WorkspaceDigest

if TYPE_CHECKING:
    from pathlib import Path

    from supervisor.journal.resume import LoopResume
    from supervisor.landing import Landing

RETRY_BACKOFF_CAP_S = 30.0
_PAUSING = "pausing after this step: "


@dataclass(slots=True)
class _Control:
    """Operator requests, honoured at the next safe point."""

    pause: bool = False
    stop: bool = False
    restart: bool = False
    interrupt: bool = False
    interrupt_reason: str = ""
    injections: list[str] = field(default_factory=list)
    resumed: anyio.Event = field(default_factory=anyio.Event)


class LoopRunner:
    """Runs one loop to an end state, publishing events for every step."""

    def __init__(
        self,
        spec: LoopSpec,
        agent_spec: AgentSpec,
        agent: Agent,
        *,
        ledger: Ledger,
        slots: anyio.CapacityLimiter,
        publish: Callable[[ev.Event], None],
        pricing: dict[str, Price] | None = None,
        resume: LoopResume | None = None,
        after_iteration: Callable[[str], Awaitable[None]] | None = None,
        state_dir: Path | None = None,
        redactor: Redactor | None = None,
        output_cap: int = OUTPUT_PER_ITERATION_DEFAULT,
        gate: Gate | None = None,
        run_id: str = "-",
        worktree: Landing | None = None,
        accounts: AccountWaits | None = None,
    ) -> None:
        self.spec = spec
        self.accounts = accounts
        """The run's spent usage windows, shared by the loops of one account."""
        self._resume_session = False
        """The next turn continues the session a usage limit cut off."""
        self.paused_by_budget = False
        """Paused by `on_exhausted = "pause"`: a raised limit resumes it."""
        self.worktree = worktree
        """A worktree loop's hooks: `setup` before it starts, `on_success` at its end."""
        self._land_due = False
        """It succeeded (or may yet) and `on_success` has not settled: not done yet."""
        self._landing_failed = False
        """Paused after a failed `on_success`, waiting for a person."""
        self._landed_by_hand = ""
        self.redactor = redactor or Redactor.from_environment()
        """Applied to check outcomes, agent output (in the turn) and the prompt as sent."""
        self.output_cap = output_cap
        """Bytes of agent output an iteration publishes in full (`transcript.OutputCap`)."""
        self.gate = gate
        """Closed while the journal cannot be written (diskfull.py): no turn starts."""
        self.run_id = run_id
        """Part of every child's `PROC_ENV` tag, so the run's end finds what it left."""
        self._child_env = {STATE_DIR_ENV: str(state_dir)} if state_dir is not None else {}
        self.checkpointer = (
            Checkpointer(
                spec.name,
                spec.workspace,
                run_id=run_id,
                author=spec.commit_author,
                known=resume.commits if resume is not None else (),
                notice=self._notice,
                redact=self.redactor.text,
            )
            if spec.worktree is not None
            else None
        )
        """Commits a worktree loop's iterations to its branch (`checkpoint.py`)."""
        self.after_iteration = after_iteration
        """Awaited after each checked iteration (the worktree overlap check)."""
        self.agent_spec = agent_spec
        self.agent = agent
        self.ledger = ledger
        self.slots = slots
        self._publish = publish
        self.pricing = pricing or {}
        self.state: ev.LoopState = "pending"
        self.reason = ""
        self.iteration = 0
        self.retries_used = 0
        self.last_output = ""
        self.check_output = ""
        self.last_check: str | None = None
        self.last_check_passed: bool | None = None
        self.evidence = ""
        self.wait_seconds: float | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        """When the loop reached an end state: its clock stops there."""
        self.next_run: float | None = None
        self.tail = TranscriptTail()
        self.detector = StuckDetector(spec.stuck)
        self.control = _Control()
        self._stop_scope: anyio.CancelScope | None = None
        self._open_iteration: float | None = None
        """When the iteration whose checkpoint has begun started; None once it has an outcome."""
        self._turn_scope: anyio.CancelScope | None = None
        self._waiting_for_slot = False
        self._unpaused_state: ev.LoopState = "running"
        self._backoff_scope: anyio.CancelScope | None = None
        self._workspace = WorkspaceDigest.shared(
            spec.workspace, exclude=(state_dir,) if state_dir is not None else ()
        )
        self._workspace_changed = False
        self._in_flight_notes: list[str] = []
        """Operator notes the running iteration's prompt carried: queued again if it
        runs again (interrupted, agent error), so no note is lost."""
        self._state_changed = anyio.Event()
        self._last_failure = ""
        self.runs = 0
        """Scheduled runs started so far."""
        self.last_run_at: float | None = None
        self.last_outcome = ""
        self.carried = Charge()
        """What earlier scheduled runs spent (the loop ledger restarts per run)."""
        self.forked_from = ""
        """"PARENT@N" for a loop forked from another's iteration N (`fork.py`)."""
        if resume is not None:
            self._restore(resume)

    # -- public state ------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.state in ev.END_STATES

    @property
    def will_run_again(self) -> bool:
        """A scheduled loop between runs (or about to be) is not done for good."""
        spec = self.spec
        if spec.schedule is None or self.state == "stopped":
            return False
        return not (spec.max_runs and self.runs >= spec.max_runs)

    @property
    def done(self) -> bool:
        landing = self._land_due and self.state == "succeeded"
        return self.finished and not self.will_run_again and not landing

    @property
    def needs_attention(self) -> bool:
        return self.state in ev.ATTENTION_STATES

    @property
    def elapsed_s(self) -> float:
        if self.started_at is None:
            return 0.0
        end = self.ended_at if self.ended_at is not None else time.time()
        return max(0.0, end - self.started_at)

    def result(self) -> ev.LoopResult:
        stats = self.ledger.statistics()
        return ev.LoopResult(
            name=self.spec.name,
            state=self.state,
            iterations=self.iteration,
            tokens=stats.tokens_spent + self.carried.tokens,
            usd=round(stats.usd_spent + self.carried.usd, 6),
            reason=self.reason,
        )

    # -- control (called by the Supervisor; never awaits a turn) -------------------
    def request_pause(self) -> None:
        """Pause at the next safe point; a loop that has not started its turn yet
        (waiting for a slot or a retry) pauses at once: no turn starts after a pause."""
        self.control.pause = True
        waiting_in_turn = self.state == "waiting" and self._turn_scope is not None
        if self._waiting_for_slot or waiting_in_turn:  # nothing streams yet: nothing lost
            self.request_pause_now()
            return
        if self._backoff_scope is not None:
            self._backoff_scope.cancel()
        elif self.state in ("running", "checking"):
            self.set_state(self.state, self.reason)  # shown as "pausing" until it stops

    def request_pause_now(self) -> None:
        """Pause and cancel the running turn; its iteration runs again on resume."""
        self.control.pause = True
        self.control.interrupt = True
        if self._turn_scope is not None:
            self._turn_scope.cancel()

    async def wait_until_idle(self) -> None:
        """Return once no agent turn or check is running (paused, stuck or ended)."""
        while self.state not in ev.ATTENTION_STATES and not self.finished:
            await self._state_changed.wait()

    def interrupt_turn(self, reason: str) -> None:
        """Cancel the running turn, not the loop: its iteration runs again (diskfull.py)."""
        if self._turn_scope is not None:
            self.control.interrupt = True
            self.control.interrupt_reason = reason
            self._turn_scope.cancel()

    def request_resume(self) -> None:
        self.control.pause = False
        self.control.resumed.set()
        if self.state == "pausing":  # the pause was cancelled before it took effect
            self.set_state(self._unpaused_state, self.reason.removeprefix(_PAUSING))

    def request_stop(self) -> None:
        self.control.stop = True
        self.control.resumed.set()
        if self._stop_scope is not None:
            self._stop_scope.cancel()

    def request_restart(self) -> None:
        self.control.restart = True
        self.control.pause = False
        self.control.resumed.set()
        if self._turn_scope is not None:
            self._turn_scope.cancel()

    def inject(self, text: str) -> None:
        """Add an operator note to the next prompt (`Supervisor.inject` checks its size)."""
        self.control.injections.append(text)
        self.detector.reset()
        self.checkpoint()

    @property
    def pending_notes_bytes(self) -> int:
        """Bytes of the operator notes waiting for the next prompt."""
        return sum(size_of(t) for t in self.control.injections)

    def apply_edit(self, spec: LoopSpec) -> None:
        """Takes effect from the next iteration (the running one keeps its prompt)."""
        self.spec = spec
        self.ledger.limits = spec.budget.limits
        self.ledger.pause_when_exhausted = spec.on_exhausted == "pause"
        self.detector = StuckDetector(spec.stuck)
        self.budget_raised()

    def budget_raised(self) -> None:
        """A limit changed: a loop paused by its budget goes on if none is spent now."""
        if self.paused_by_budget and self.state == "paused" and not still_short(self.ledger):
            self.request_resume()

    def _pause_for_budget(self, reason: str) -> None:
        self.paused_by_budget = True
        self.set_state("paused", paused_reason(self.ledger, reason), cause="budget")

    def start_new_run(self) -> None:
        """A scheduled loop's next run: iteration 1 again, a fresh per-run loop budget."""
        led = self.ledger
        self.carried = Charge(
            tokens=self.carried.tokens + led.tokens_spent,
            usd=self.carried.usd + led.usd_spent,
            cpu_s=self.carried.cpu_s + led.cpu_spent,
        )
        led.tokens_spent, led.usd_spent, led.cpu_spent = 0, 0.0, 0.0
        self.started_at = None
        self.prepare_restart()
        self.state = "pending"

    def set_scheduled(self, reason: str) -> None:
        self.set_state("scheduled", reason)

    async def sleep_until(self, due: float) -> bool:
        """Sleep until `due` (between scheduled runs); False if stopped meanwhile."""
        with anyio.CancelScope() as scope:
            self._stop_scope = scope
            await anyio.sleep(max(0.0, due - time.time()))
        self._stop_scope = None
        if scope.cancelled_caught or self.control.stop:
            self._end("stopped", "stopped by the operator")
            return False
        return True

    def prepare_restart(self) -> None:
        """Reset the loop to iteration 0 (spent budget stays spent: it was real money)."""
        self.control = _Control()
        self.started_at = None  # the loop's wall budget starts again too
        self.ended_at = None
        self.iteration = 0
        self.retries_used = 0
        self.last_output = ""
        self.check_output = ""
        self.last_check = None
        self.last_check_passed = None
        self.evidence = ""
        self.detector.reset()
        self.agent.reset()

    # -- the task --------------------------------------------------------------
    async def run(self) -> ev.LoopResult:
        if self.finished:
            return self.result()
        if self.started_at is None:
            self.started_at = time.time()
        self._land_due = self.worktree is not None and self.worktree.lands(self.spec)
        while True:
            with anyio.CancelScope() as stop_scope:
                self._stop_scope = stop_scope
                if await self._set_up():
                    await self._run_until_end()
            self._stop_scope = None
            if stop_scope.cancelled_caught and not self.finished:
                self._end("stopped", "stopped by the operator")
            if not await self._after_success():
                break
        return self.result()

    # -- a worktree loop's start and end (`landing.Landing`) -----------------------------
    async def _set_up(self) -> bool:
        """Run the worktree's `setup` commands if they are due; False: the loop failed."""
        if self.worktree is None or self.finished:
            return True
        problem = await self.worktree.set_up(self, self._loopvisor_env(0, "setup"))
        if problem is not None:
            self._end("failed", problem)
            return False
        return True

    async def _after_success(self) -> bool:
        """`on_success` once the loop succeeded. A landing that fails is a notice and a
        pause: resume tries again, stop ends it succeeded but not landed, a landing by
        hand (`land` op) settles it. True when the operator restarted it meanwhile."""
        if not self._land_due or self.state != "succeeded" or self.worktree is None:
            self._land_due = False
            return False
        succeeded = self.reason
        while True:
            message, ok = await self.worktree.on_success(self.spec)
            if ok:
                self._land_due = False
                self.emit(ev.Notice(loop=self.spec.name, message=message))
                self._end("succeeded", f"{succeeded}; {message}")
                return False
            self.emit(ev.Notice(loop=self.spec.name, level="error", message=message))
            self.set_state("paused", f"{succeeded}, but {message} (resume: try again)")
            self.control = _Control()
            self._landing_failed = True
            try:
                await self.control.resumed.wait()
            finally:
                self._landing_failed = False
            if self.control.restart:
                return True
            if self._landed_by_hand or self.control.stop:
                done = self._landed_by_hand or "not landed: stopped by the operator"
                self._land_due, self._landed_by_hand = False, ""
                self._end("succeeded", f"{succeeded}; {done}")
                return False
            self.set_state("succeeded", succeeded)

    def landed(self, message: str) -> None:
        """The operator landed the loop's branch: a failed `on_success` is settled."""
        if self._landing_failed:
            self._landed_by_hand = message
            self.control.resumed.set()

    async def _run_until_end(self) -> None:
        while not self.finished:
            wall = self.spec.budget.limits.wall  # read each time: an edit applies from here
            deadline = None if wall is None else (self.started_at or time.time()) + wall
            if self.control.stop:
                self._end("stopped", "stopped by the operator")
                return
            if self.control.restart:
                self.prepare_restart()
                self.set_state("pending", "restarted by the operator")
            if self.control.pause or self.state in ev.ATTENTION_STATES:
                await self._wait_for_person()
                continue
            if self.iteration >= self.spec.max_iterations:
                self._end(
                    "failed",
                    f"max_iterations ({self.spec.max_iterations}) reached; last check: "
                    f"{self.last_check or 'none'}",
                )
                return
            crossed = self.ledger.crossed()
            if crossed is not None and pauses(self.ledger, crossed.reason):
                self._pause_for_budget(crossed.reason)
                continue
            if crossed is not None:
                self._end("exhausted", crossed.reason)
                return
            if deadline is not None and time.time() >= deadline:
                self._end("exhausted", f"loop wall budget ({format_duration(wall or 0)}) used up")
                return
            if self.gate is not None and not self.gate.is_open:
                self.set_state("waiting", self.gate.reason)
                await self.gate.wait()
                continue  # stop, pause and budgets are looked at again
            if await self._wait_out_usage_limit():
                continue  # stop, pause and budgets are looked at again
            remaining = None if deadline is None else max(0.0, deadline - time.time())
            with anyio.move_on_after(remaining) as wall_scope:
                await self._iteration(self.iteration + 1)
            if wall_scope.cancelled_caught and not self.finished:
                self._end("exhausted", f"loop wall budget ({format_duration(wall or 0)}) used up")

    async def _wait_out_usage_limit(self) -> bool:
        """Wait (state `waiting`, cause "usage_limit") while this loop's account is over
        its usage window, until the reset plus jitter; a pause ends the wait, a stop
        cancels it. False when there is nothing to wait for."""
        account = self.agent.account() if isinstance(self.agent, Accounted) else None
        limit = self.accounts.blocked(account) if self.accounts is not None else None
        if limit is None or self.accounts is None:
            return False
        wake = self.accounts.wake_at(limit)
        n = self.iteration + 1
        why = describe_limit(limit)
        self.set_state("waiting", why, n, max(0.0, wake - time.time()), cause="usage_limit")
        with anyio.CancelScope() as self._backoff_scope:  # a pause ends the wait
            await anyio.sleep(max(0.0, wake - time.time()))
        self._backoff_scope = None
        if not self.control.pause:
            self.set_state("pending", f"{why}: resuming iteration {n}", n)
        return True

    async def _wait_for_person(self) -> None:
        if self.state not in ev.ATTENTION_STATES:
            self.set_state("paused", "paused by the operator")
        self.control.resumed = anyio.Event()
        await self.control.resumed.wait()
        self.paused_by_budget = False
        self.control.interrupt = False  # a step-in while no turn ran has nothing to cancel
        if not self.control.stop and not self.control.restart:
            self.detector.reset()
            self.set_state("pending", "resumed by the operator")

    # -- one iteration ----------------------------------------------------------
    async def _iteration(self, n: int) -> None:
        spec = self.spec
        prompt = self._render_prompt(n)
        if prompt is None:
            return
        self.iteration = n
        started = time.monotonic()
        self.emit(ev.IterationStarted(loop=spec.name, iteration=n, prompt=prompt))
        got_slot = await self._take_slot(n)
        try:
            try:
                checked = await self._in_slot(n, prompt, started, got_slot)
            finally:
                if got_slot:
                    self.slots.release()
            if isinstance(checked, float):  # a retryable agent error: back off without a slot
                await self._backoff(n, checked)
            elif checked is not None:
                turn, outcomes = checked
                if self.after_iteration is not None:
                    await self.after_iteration(spec.name)
                await self._decide(n, turn, outcomes, started)
        except anyio.get_cancelled_exc_class():
            if self._open_iteration is not None:  # cut off mid-turn: keep what it changed
                with anyio.CancelScope(shield=True):
                    await self._finish_cut_off(n)
            raise
        if self.iteration < n:  # it runs again: its notes are still unanswered
            self.control.injections[:0] = self._in_flight_notes
        self._in_flight_notes = []
        self.checkpoint()

    def checkpoint(self) -> None:
        """Journal what the next prompt is built from (see `ev.LoopCheckpoint`)."""
        self.emit(
            ev.LoopCheckpoint(
                loop=self.spec.name,
                iteration=self.iteration,
                check_output=self.check_output,
                last_output=self.last_output[-LAST_OUTPUT_LIMIT:],
                notes=(*self._in_flight_notes, *self.control.injections),
                detector=self.detector.snapshot(),
            )
        )

    async def _in_slot(
        self, n: int, prompt: str, started: float, got_slot: bool
    ) -> tuple[TurnResult, list[CheckOutcome]] | float | None:
        """The agent turn and the checks, while holding a compute slot. Returns what
        to decide on, a retry delay, or None when the iteration already ended."""
        # Only where a failing check could be mistaken for a loop: a digest reads the
        # workspace twice per iteration, which a loop without checks need not pay.
        watching = self.spec.checks and (
            self.spec.stuck.same_failure or self.spec.stuck.same_output
        )
        watch = self._workspace if watching else None
        if self.checkpointer is not None and got_slot:
            await self.checkpointer.begin(n, self._loopvisor_env(n, "git"))
            self._open_iteration = started
        before = await watch.take() if watch is not None and got_slot else None
        turn = await self._turn(n, prompt) if got_slot else TurnResult()
        after = await watch.take() if watch is not None and before is not None else None
        self._workspace_changed = after is not None and after != before
        if self.control.restart:
            await self._finish_iteration(n, "stopped", "restarted by the operator", turn, started)
            return None
        if self.control.interrupt:
            reason = self.control.interrupt_reason or "paused by the operator"
            self.control.interrupt, self.control.interrupt_reason = False, ""
            await self._finish_iteration(n, "interrupted", reason, turn, started)
            self.iteration = n - 1  # the interrupted iteration runs again on resume
            return None
        if turn.failure is not None and turn.failure.usage_limit is not None:
            # Not the loop's failure: no retry is counted, what it spent stays charged
            # once, and the iteration runs again in the same session after the reset.
            limit = turn.failure.usage_limit
            if self.accounts is not None:
                limit = self.accounts.block(limit)
            await self._finish_iteration(n, "interrupted", describe_limit(limit), turn, started)
            self.iteration = n - 1
            self._resume_session = self.agent.session_id is not None
            return None
        if turn.exhausted is not None and pauses(self.ledger, turn.exhausted):
            await self._finish_iteration(n, "interrupted", turn.exhausted, turn, started)
            self.iteration = n - 1  # cut off by the budget: it runs again once raised
            self._pause_for_budget(turn.exhausted)
            return None
        if turn.exhausted is not None:
            await self._finish_iteration(n, "exhausted", turn.exhausted, turn, started)
            self._end("exhausted", turn.exhausted)
            return None
        if turn.retries_exhausted is not None:
            await self._finish_iteration(n, "failed", turn.retries_exhausted, turn, started)
            self._end("failed", turn.retries_exhausted)
            return None
        if turn.stalled is not None:
            await self._finish_iteration(n, "stuck", turn.stalled.evidence, turn, started)
            self._on_stuck(n, turn.stalled)
            return None
        if turn.failure is not None:
            return await self._after_failure(n, turn, started)
        self.last_output = turn.output
        return turn, await self._run_checks(n)

    async def _take_slot(self, n: int) -> bool:
        """Wait for a compute slot; False when a step-in or restart cancelled the wait
        (no turn has run, so nothing is thrown away)."""
        if self.slots.available_tokens < 1:
            self.set_state("waiting", "waiting for a free slot", n)
        self._waiting_for_slot = True
        try:
            with anyio.CancelScope() as wait:
                self._turn_scope = wait
                await self.slots.acquire()
        finally:
            self._waiting_for_slot = False
            self._turn_scope = None
        if wait.cancelled_caught:
            return False
        if self.finished:  # ended as the slot came (`force_end`: the global budget ran out
            self.slots.release()  # while this task was on its way): no turn; the stop
            await anyio.lowlevel.checkpoint()  # scope's cancellation comes here
            return False
        if self.control.pause or self.control.restart:  # asked for after the slot came
            self.slots.release()
            self.control.interrupt = self.control.interrupt or self.control.pause
            return False
        self.set_state("running", f"agent turn {n}/{self.spec.max_iterations}", n)
        return True

    async def _after_failure(self, n: int, turn: TurnResult, started: float) -> float | None:
        """Count the error; None when the loop failed, else the delay before the retry."""
        failure = turn.failure
        assert failure is not None
        self.retries_used += 1
        limit = self.spec.budget.retries
        if not failure.retryable or self.retries_used > limit:
            why = "not retryable" if not failure.retryable else f"{limit} retries used"
            reason = f"agent error ({why}): {failure.message}"
            await self._finish_iteration(n, "failed", reason, turn, started)
            self._end("failed", reason)
            return None
        await self._finish_iteration(n, "error", failure.message, turn, started)
        self._last_failure = failure.message
        return failure.retry_after or min(RETRY_BACKOFF_CAP_S, 0.5 * 2 ** (self.retries_used - 1))

    async def _backoff(self, n: int, delay: float) -> None:
        limit = self.spec.budget.retries
        why = f"retry {self.retries_used}/{limit} after: {self._last_failure}"
        self.set_state("waiting", why, n, delay)
        with anyio.CancelScope() as self._backoff_scope:  # a pause ends the wait
            await anyio.sleep(delay)
        self._backoff_scope = None
        self.iteration = n - 1  # the same iteration runs again

    async def _decide(
        self, n: int, turn: TurnResult, outcomes: list[CheckOutcome], started: float
    ) -> None:
        spec = self.spec
        checks_ok = all(o.passed for o in outcomes)
        marker_ok = spec.done_marker is None or spec.done_marker in turn.output
        if checks_ok and marker_ok:
            what = (
                "done marker seen"
                if not outcomes
                else "the check passed"
                if len(outcomes) == 1
                else f"all {len(outcomes)} checks passed"
            )
            if outcomes and spec.done_marker:
                what += " and done marker seen"
            await self._finish_iteration(n, "succeeded", what, turn, started)
            self._end("succeeded", f"{what} in iteration {n}")
            return
        failing = next((o for o in outcomes if not o.passed), None)
        fingerprint, evidence = combined_failure(outcomes)
        crossed = self.ledger.crossed()
        if crossed is not None and pauses(self.ledger, crossed.reason):
            await self._finish_iteration(n, "continue", crossed.reason, turn, started)
            self._pause_for_budget(crossed.reason)  # the next iteration, once raised
            return
        if crossed is not None:  # nothing more can run: the budget, not the agent, ends it
            await self._finish_iteration(n, "exhausted", crossed.reason, turn, started)
            self._end("exhausted", crossed.reason)
            return
        verdict = self.detector.observe(
            iteration=n,
            output=turn.output,
            check_fingerprint=fingerprint,
            check_evidence=evidence,
            checks_passed=checks_ok,
            usd=turn.usd,
            tokens=turn.tokens,
            workspace_changed=self._workspace_changed,
        )
        why = failing.summary if failing else f"done marker {spec.done_marker!r} not seen"
        if verdict is not None and spec.on_stuck != "continue":
            await self._finish_iteration(n, "stuck", verdict.evidence, turn, started)
            self._on_stuck(n, verdict)
            return
        if verdict is not None:
            self._on_stuck(n, verdict)
        await self._finish_iteration(n, "continue", why, turn, started)

    def _on_stuck(self, n: int, verdict: StuckVerdict) -> None:
        action = self.spec.on_stuck
        self.evidence = f"{verdict.detector}: {verdict.evidence}"
        self.emit(
            ev.StuckDetected(
                loop=self.spec.name,
                iteration=n,
                detector=verdict.detector,
                evidence=verdict.evidence,
                action=action,
            )
        )
        if action == "pause":
            self.set_state("stuck", self.evidence, n)
        elif action == "stop":
            self._end("stopped", f"stuck: {self.evidence}")

    # -- the agent turn ---------------------------------------------------------
    async def chat(self, text: str) -> str:
        """An operator turn on the loop's agent while the loop is paused (step-in)."""
        n = self.iteration
        self.emit_output(n, f"{text}\n", "operator")  # the stream tags it as the operator
        turn = await self._turn(n, text, operator=True)
        if turn.failure is not None:
            return f"(agent error: {turn.failure.message})"
        if turn.exhausted is not None:
            return f"(budget: {turn.exhausted})"
        return turn.output

    async def _turn(self, n: int, prompt: str, *, operator: bool = False) -> TurnResult:
        env = self._loopvisor_env(n, "operator" if operator else "turn")
        resume = self._resume_session and not operator
        if not operator:
            self._resume_session = False
        return await AgentTurn(
            self,
            n,
            prompt,
            env=env,
            operator=operator,
            on_scope=self._hold_turn_scope,
            resume=resume,
        ).run()

    def _loopvisor_env(self, n: int, kind: str) -> dict[str, str]:
        """The LOOPVISOR_* variables of a child of iteration `n` (an agent turn, an
        operator turn or a check): who it belongs to, and the tag its leftovers die by."""
        return {
            **self._child_env,
            PROC_ENV: proc_tag(self.run_id, self.spec.name, n, kind),
            "LOOPVISOR_LOOP": self.spec.name,
            "LOOPVISOR_ITERATION": str(n),
            "LOOPVISOR_WORKSPACE": str(self.spec.workspace),
        }

    def _hold_turn_scope(self, scope: anyio.CancelScope | None) -> None:
        self._turn_scope = scope

    # -- checks -----------------------------------------------------------------
    async def _run_checks(self, n: int) -> list[CheckOutcome]:
        spec = self.spec
        if not spec.checks:
            return []
        self.set_state("checking", f"running {len(spec.checks)} check(s)", n)
        env = self._loopvisor_env(n, "check")
        outcomes: list[CheckOutcome] = []
        for check in spec.checks:
            self.emit(
                ev.CheckStarted(loop=spec.name, iteration=n, name=check.name, command=check.display)
            )
            outcome = self.redactor.fields(
                await run_check(check, workspace=spec.workspace, env=env)
            )
            if outcome.cpu_s > 0:  # charged like agent CPU: in the ledgers and the journal
                self.ledger.charge_cpu(outcome.cpu_s)
                self.emit(ev.UsageCharged(loop=spec.name, iteration=n, cpu_s=outcome.cpu_s))
            outcomes.append(outcome)
            self.emit(
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
        self.check_output = render_check_output(outcomes)
        self.last_check, self.last_check_passed = check_summary(
            [(o.name, o.passed, o.summary) for o in outcomes]
        )
        return outcomes

    # -- helpers -----------------------------------------------------------------
    def _render_prompt(self, n: int) -> str | None:
        """Iteration `n`'s prompt; None after ending the loop `failed` when it would be
        over `PROMPT_MAX_BYTES` (a template repeating `$check_output` can multiply a
        check's output): an error naming the size, never a cut prompt sent silently.
        Operator notes are used up only by a prompt that is sent."""
        spec = self.spec
        text = string.Template(spec.prompt).safe_substitute(
            iteration=n,
            max_iterations=spec.max_iterations,
            check_output=self.check_output or "(no checks have run yet)",
            last_output=self.last_output[-LAST_OUTPUT_LIMIT:] or "(no previous output)",
            loop=spec.name,
            workspace=str(spec.workspace),
        )
        if self.control.injections:
            notes = "\n".join(f"Operator note: {t}" for t in self.control.injections)
            text = f"{text}\n\n{notes}"
        problem = too_large(
            f"iteration {n}'s prompt (placeholders expanded, operator notes added)",
            size_of(text),
            PROMPT_MAX_BYTES,
        )
        if problem is not None:
            self._end("failed", f"{problem}; shorten the prompt template and restart")
            return None
        self._in_flight_notes = list(self.control.injections)  # sent: queued again on a re-run
        self.control.injections.clear()
        # Valid text for every agent (a prompt file, stdin, an API request): `$workspace`
        # of a directory whose name is not UTF-8, or a note injected in-process, may
        # hold lone surrogates.
        return self.redactor.text(valid_text(text))

    async def _finish_iteration(
        self, n: int, outcome: ev.IterationOutcome, reason: str, turn: TurnResult, started: float
    ) -> None:
        """Journal the iteration's outcome, after its checkpoint commit (worktree loops):
        shielded, so that a stop or a budget cut arriving meanwhile cannot leave a commit
        without its row, nor a git command killed half-way."""
        self._open_iteration = None
        point = Checkpoint()
        if self.checkpointer is not None:
            with anyio.CancelScope(shield=True):
                point = await self.checkpointer.commit(
                    n,
                    outcome,
                    reason,
                    tokens=turn.tokens,
                    usd=turn.usd,
                    env=self._loopvisor_env(n, "git"),
                )
        self.emit(
            ev.IterationFinished(
                loop=self.spec.name,
                iteration=n,
                outcome=outcome,
                reason=reason,
                tokens=turn.tokens,
                usd=round(turn.usd, 6),
                duration_s=round(time.monotonic() - started, 3),
                session_id=self.agent.session_id,
                commit=point.commit,
                commit_parent=point.parent,
            )
        )

    async def _finish_cut_off(self, n: int) -> None:
        """An iteration cancelled before its outcome (an operator stop, a budget, the run
        shut down by Ctrl-C or SIGTERM): its checkpoint commit still takes what the agent
        changed, outcome `stopped` and why, so that nothing it wrote is lost. (What it
        spent is in the ledger; the turn's own count went with the cancelled turn.)"""
        started = self._open_iteration
        assert started is not None
        if self.control.stop:
            reason = "stopped by the operator"
        elif self.finished:  # force_end: the global budget, a shutdown
            reason = self.reason
        else:
            reason = self._wall_used_up() or "cut off mid-turn"
        await self._finish_iteration(
            n, "stopped", f"cut off mid-turn: {reason}", TurnResult(), started
        )

    def _wall_used_up(self) -> str | None:
        """The loop's wall budget's reason once it is used up; else None."""
        wall = self.spec.budget.limits.wall
        if wall is None or time.time() < (self.started_at or time.time()) + wall:
            return None
        return f"loop wall budget ({format_duration(wall)}) used up"

    def _notice(self, level: str, message: str) -> None:
        self.emit(ev.Notice(loop=self.spec.name, level=level, message=message))  # type: ignore[arg-type]

    def emit_output(self, n: int, text: str, stream: str) -> None:
        self.tail.add(text, stream)
        self.emit(ev.AgentOutput(loop=self.spec.name, iteration=n, text=text, stream=stream))  # type: ignore[arg-type]

    def set_state(
        self,
        state: ev.LoopState,
        reason: str,
        iteration: int | None = None,
        wait: float | None = None,
        *,
        cause: ev.StateCause = "",
    ) -> None:
        if self.control.pause and state in ("running", "checking"):
            self._unpaused_state = state  # what it shows again if the pause is cancelled
            state, reason = "pausing", _PAUSING + reason.removeprefix(_PAUSING)
        self.state = state
        self.reason = reason
        self.wait_seconds = wait
        self.ended_at = time.time() if state in ev.END_STATES else None
        self._state_changed.set()
        self._state_changed = anyio.Event()
        self.emit(
            ev.LoopStateChanged(
                loop=self.spec.name,
                state=state,
                reason=reason,
                iteration=self.iteration if iteration is None else iteration,
                wait_seconds=wait,
                cause=cause,
            )
        )

    def _end(self, state: ev.LoopState, reason: str) -> None:
        self.last_outcome = state
        self.set_state(state, reason)

    def force_end(self, state: ev.LoopState, reason: str) -> None:
        """End the loop from outside (global budget gone): record why, then cancel it."""
        if not self.finished:
            self._end(state, reason)
        if self._stop_scope is not None:
            self._stop_scope.cancel()

    def emit(self, event: ev.Event) -> None:
        line = describe(event)
        if line is not None:
            self.tail.add_line(line._replace(text=self.redactor.text(line.text)))
        self._publish(event)

    def _restore(self, resume: LoopResume) -> None:
        self.iteration = max(0, resume.next_iteration - 1)
        self.retries_used = resume.retries_used
        self.last_output = resume.last_output
        self.check_output = resume.check_output
        self.control.injections = list(resume.notes)
        if resume.detector is not None:
            self.detector.restore(resume.detector)
        self.agent.restore(resume.session_id, resume.conversation)
        account = self.agent.account() if isinstance(self.agent, Accounted) else None
        if self.accounts is not None and self.accounts.restore(account, resume.usage_wait_until):
            self._resume_session = self.agent.session_id is not None  # as after the refusal
        self.runs = resume.runs
        self.last_run_at = resume.last_run_at
        if resume.state == "scheduled":
            self.state, self.reason = "scheduled", resume.reason
        elif resume.state in ev.END_STATES:
            self.state = resume.state  # type: ignore[assignment]
            self.reason = resume.reason
            self.started_at, self.ended_at = resume.started_at, resume.ended_at
        self.last_check, self.last_check_passed = resume.last_check, resume.last_check_passed
