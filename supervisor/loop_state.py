"""What a loop is at any moment, and how that is published and restored.

`LoopRunner` (loop.py) drives a loop; this base class holds everything the loop's
modules share (loop_iteration, loop_worktree, loop_prompt, turn): its state and
counters, the operator's pending requests (`Control`), the one way a change is
published (`set_state`, `emit`), the record a resume rebuilds the next prompt from
(`checkpoint`) and that rebuild (`_restore`). Keeping it apart lets each of those
modules read one set of fields without the runner's control flow.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from supervisor import events as ev
from supervisor.agents.base import Agent, accounted
from supervisor.budget import Charge, Ledger
from supervisor.checkpoint import Checkpointer
from supervisor.diskfull import Gate
from supervisor.reaper import PROC_ENV, STATE_DIR_ENV, proc_tag
from supervisor.redact import Redactor
from supervisor.render import describe
from supervisor.score import ScoreBoard
from supervisor.sizes import OUTPUT_PER_ITERATION_DEFAULT
from supervisor.spec import AgentSpec, LoopSpec, Price
from supervisor.stuck import StuckDetector
from supervisor.transcript import TranscriptTail
from supervisor.turn import LAST_OUTPUT_LIMIT, TurnResult
from supervisor.usagewait import AccountWaits
from supervisor.workspace_state import WorkspaceDigest

if TYPE_CHECKING:
    from pathlib import Path

    from supervisor.journal.resume import LoopResume
    from supervisor.landing import Landing
    from supervisor.loop import LoopRunner

PAUSING = "pausing after this step: "


@dataclass(slots=True)
class Control:
    """Operator requests, honoured at the next safe point."""

    pause: bool = False
    stop: bool = False
    restart: bool = False
    interrupt: bool = False
    interrupt_reason: str = ""
    injections: list[str] = field(default_factory=list)
    resumed: anyio.Event = field(default_factory=anyio.Event)


class LoopStatus:
    """One loop's state, counters and pending operator requests, and their events."""

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
        self.scores = ScoreBoard(spec.score) if spec.score is not None else None
        """A metric loop's scores: which iterations were kept, the best (`score.py`)."""
        self.control = Control()
        self._stop_scope: anyio.CancelScope | None = None
        self._open_iteration: float | None = None
        """When the iteration whose checkpoint has begun started; None once it has an outcome."""
        self._open_turn: TurnResult | None = None
        """The open iteration's turn result, filled as usage is charged (`finish_cut_off`)."""
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
        self.upstream: tuple[LoopStatus, ...] = ()
        """The loops of its `after` (set by the run once every runner exists)."""
        self.attempts: tuple[LoopRunner, ...] = ()
        """A race loop's attempts, in order (set by the run; `race.py`)."""
        self.after_output = ""
        """`$after_output`: how they ended (`pipeline.py`)."""
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

    async def state_changed(self) -> None:
        """Return at its next state change (a pipeline's wait on it)."""
        await self._state_changed.wait()

    def state_change(self) -> anyio.Event:
        """The event its next state change sets, taken now: a waiter started later (a
        task of a task group) that took it only when it ran could miss a change made
        in between (a race whose attempts all ended meanwhile waited forever)."""
        return self._state_changed

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
            state, reason = "pausing", PAUSING + reason.removeprefix(PAUSING)
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
        if self.scores is not None:
            self.scores.restore(list(resume.scores))
        self.agent.restore(resume.session_id, resume.conversation)
        account = self.agent.account() if accounted(self.agent) else None
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
        owed = self.worktree.owed(self.spec, resume) if self.worktree is not None else None
        if owed is not None:  # killed before its landing was recorded done: land it now
            self.state, self.reason, self._land_due = "succeeded", owed, True
        self.last_check, self.last_check_passed = resume.last_check, resume.last_check_passed
