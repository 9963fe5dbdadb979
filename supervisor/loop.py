"""One loop's state machine: prompt → agent turn → checks → decide, until it ends.

`LoopRunner.run()` is the loop's task; between iterations `_run_until_end` is the
safe point where everything the operator can do (pause, stop, restart, edit,
inject) takes effect: each is a flag or a cancel scope set here, so control never
races a turn. What the loop is (its fields, events, checkpoint and resume) is
`loop_state.LoopStatus`; one iteration is `loop_iteration.run_iteration`; its
prompt is `loop_prompt`; a worktree loop's setup, commits and landing are
`loop_worktree`.
"""

from __future__ import annotations

import time

import anyio

from supervisor import events as ev
from supervisor.agents.base import accounted
from supervisor.agents.usagelimit import describe as describe_limit
from supervisor.budget import Charge
from supervisor.budget_pause import paused_reason, pauses, still_short
from supervisor.durations import format_duration
from supervisor.loop_iteration import run_iteration
from supervisor.loop_state import PAUSING, Control, LoopStatus
from supervisor.loop_worktree import after_success, set_up
from supervisor.pipeline import wait_after
from supervisor.race import run_race
from supervisor.score import show
from supervisor.sizes import size_of
from supervisor.spec import LoopSpec
from supervisor.stuck import StuckDetector
from supervisor.turn import AgentTurn, TurnResult


class LoopRunner(LoopStatus):
    """Runs one loop to an end state, publishing events for every step."""

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
            self.set_state(self._unpaused_state, self.reason.removeprefix(PAUSING))

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
        self.control = Control()
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
        if self.scores is not None:
            self.scores.restore([])
        self.agent.reset()

    # -- the task --------------------------------------------------------------
    async def run(self) -> ev.LoopResult:
        if self.finished and not self._land_due:  # due: resumed with its landing to do
            return self.result()
        if self.started_at is None:
            self.started_at = time.time()
        self._land_due = self.worktree is not None and self.worktree.lands(self.spec)
        while True:
            with anyio.CancelScope() as stop_scope:
                self._stop_scope = stop_scope
                if not await wait_after(self):
                    pass
                elif self.attempts:  # a race: its attempts run, it decides
                    await run_race(self)
                elif await set_up(self):
                    await self._run_until_end()
            self._stop_scope = None
            if stop_scope.cancelled_caught and not self.finished:
                self._end("stopped", "stopped by the operator")
            if not await after_success(self):
                break
        return self.result()

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
                best = self.scores.best if self.scores is not None else None
                self._end(
                    "failed",
                    f"max_iterations ({self.spec.max_iterations}) reached; last check: "
                    f"{self.last_check or 'none'}"
                    + (
                        f"; best score {show(best.score)} (iteration {best.iteration})"
                        if best
                        else ""
                    ),
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
                await run_iteration(self, self.iteration + 1)
            if wall_scope.cancelled_caught and not self.finished:
                self._end("exhausted", f"loop wall budget ({format_duration(wall or 0)}) used up")

    async def _wait_out_usage_limit(self) -> bool:
        """Wait (state `waiting`, cause "usage_limit") while this loop's account is over
        its usage window, until the reset plus jitter; a pause ends the wait, a stop
        cancels it. False when there is nothing to wait for."""
        account = self.agent.account() if accounted(self.agent) else None
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
        turn = AgentTurn(
            self,
            n,
            prompt,
            env=env,
            operator=operator,
            on_scope=self._hold_turn_scope,
            resume=resume,
        )
        if not operator:  # counted as it is charged: a turn cut off still has its count
            self._open_turn = turn.result
        return await turn.run()

    def _hold_turn_scope(self, scope: anyio.CancelScope | None) -> None:
        self._turn_scope = scope

    def force_end(self, state: ev.LoopState, reason: str) -> None:
        """End the loop from outside (global budget gone): record why, then cancel it."""
        if not self.finished:
            self._end(state, reason)
        if self._stop_scope is not None:
            self._stop_scope.cancel()
