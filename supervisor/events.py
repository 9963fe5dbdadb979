"""Typed event records: the only thing that crosses from the core to a UI.

Every subscriber (TUI, headless printer, journal, control socket) sees the same
records. Each is a frozen dataclass with a stable snake_case `type` name and a
`to_dict()` that is JSON-ready, so the JSON-lines output and the socket protocol
are just these dicts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from supervisor.events_base import ATTENTION_STATES as ATTENTION_STATES
from supervisor.events_base import END_STATES as END_STATES
from supervisor.events_base import Event as Event
from supervisor.events_base import IterationOutcome as IterationOutcome
from supervisor.events_base import LoopEvent as LoopEvent
from supervisor.events_base import LoopState as LoopState
from supervisor.events_base import StateCause as StateCause
from supervisor.run_records import BudgetChanged as BudgetChanged
from supervisor.run_records import LandingFinished as LandingFinished
from supervisor.run_records import LandingStarted as LandingStarted
from supervisor.run_records import LoopAdded as LoopAdded
from supervisor.run_records import LoopEdited as LoopEdited
from supervisor.run_records import LoopForked as LoopForked


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(Event):
    type: ClassVar[str] = "run_started"
    run_id: str
    config: str
    loops: tuple[str, ...]
    resumed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopStateChanged(LoopEvent):
    type: ClassVar[str] = "state"
    state: LoopState
    reason: str = ""
    iteration: int = 0
    wait_seconds: float | None = None
    """While `waiting`: seconds until the next attempt, when known."""
    cause: StateCause = ""
    """Why, for machines (a notifier): "usage_limit" (waiting for the account's usage
    window to reset), "rate_limit" (an API 429 with a long retry-after), "budget"
    (paused until a person raises an exhausted budget, `on_exhausted = "pause"`);
    "" otherwise. The loop's next state change with another cause ends it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IterationStarted(LoopEvent):
    type: ClassVar[str] = "iteration_started"
    iteration: int
    prompt: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentOutput(LoopEvent):
    """Text the agent produced; `stream` tells assistant text from stderr and raw lines
    (and `setup`: the output of a worktree's setup commands, before iteration 1;
    `warning`: what loopvisor says about the agent's output, such as a malformed
    usage line, in the transcript where it happened)."""

    type: ClassVar[str] = "output"
    iteration: int
    text: str
    stream: Literal["assistant", "stdout", "stderr", "raw", "operator", "setup", "warning"] = (
        "assistant"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputTruncated(LoopEvent):
    """An iteration printed more than `limit` bytes: `dropped` bytes of it were counted
    but neither journalled nor shown (the last `sizes.OUTPUT_TAIL_BYTES` follow)."""

    type: ClassVar[str] = "output_truncated"
    iteration: int
    dropped: int
    limit: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCalled(LoopEvent):
    type: ClassVar[str] = "tool_call"
    iteration: int
    tool_id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolReturned(LoopEvent):
    type: ClassVar[str] = "tool_result"
    iteration: int
    tool_id: str
    output: str
    is_error: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageCharged(LoopEvent):
    """Usage settled against the ledgers (a delta, never a running total)."""

    type: ClassVar[str] = "usage"
    iteration: int
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    usd: float = 0.0
    cpu_s: float = 0.0

    @property
    def tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_tokens
            + self.cache_read_tokens
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetReserved(LoopEvent):
    """Tokens/USD set aside before a model request (journalled for crash recovery)."""

    type: ClassVar[str] = "reserved"
    iteration: int
    tokens: int
    usd: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetReleased(LoopEvent):
    """The unused rest of the open reservation was given back."""

    type: ClassVar[str] = "released"
    iteration: int
    tokens: int
    usd: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionSaved(LoopEvent):
    """The agent's conversation state after a turn: session id and/or messages."""

    type: ClassVar[str] = "session"
    iteration: int
    session_id: str | None = None
    conversation: list[dict[str, Any]] | None = None
    last_output: str = ""
    check_output: str = ""
    session_at: str | None = None
    """Claude Code: the `uuid` of the turn's last assistant message, where a fork from
    this iteration cuts the session (`--resume-session-at`); None: not known."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopCheckpoint(LoopEvent):
    """What the next prompt is built from, after an iteration or an inject: the feedback
    (`$check_output`, `$last_output`), operator notes not yet answered, and the stuck
    detector's memory. `--resume` restores the last one, so that a re-run iteration's
    prompt is byte-identical to the one the crash cut off."""

    type: ClassVar[str] = "checkpoint"
    iteration: int
    """The last iteration that finished."""
    check_output: str = ""
    last_output: str = ""
    notes: tuple[str, ...] = ()
    detector: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckStarted(LoopEvent):
    type: ClassVar[str] = "check_started"
    iteration: int
    name: str
    command: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckFinished(LoopEvent):
    type: ClassVar[str] = "check"
    iteration: int
    name: str
    passed: bool
    exit_code: int | None
    summary: str
    """One line: why it passed or failed (exit code, guard, timeout)."""
    output: str
    """Captured output, truncated (the tail is kept)."""
    duration_s: float
    fingerprint: str = ""
    score: float | None = None
    """A score check's number (`score.py`); None without a score or when it had none."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IterationFinished(LoopEvent):
    type: ClassVar[str] = "iteration_finished"
    iteration: int
    outcome: IterationOutcome
    reason: str
    tokens: int
    usd: float
    duration_s: float
    session_id: str | None = None
    commit: str | None = None
    """A worktree loop's checkpoint: its branch's HEAD after the iteration, when the
    iteration moved it (`checkpoint.py`); None when it changed nothing."""
    commit_parent: str | None = None
    """The branch's HEAD when the iteration began (its diff is commit_parent..commit)."""
    score: float | None = None
    """A metric loop's score of this iteration (`score.py`); None: no score."""
    kept: bool | None = None
    """A metric loop: whether the iteration improved on the best and was kept;
    None for a loop without a score (and an iteration that was not judged)."""
    reverted_to: str | None = None
    """A worktree metric loop's iteration that was not kept: the best commit its
    branch was reset to (`git reset --hard`) before the next prompt."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduledRun(LoopEvent):
    """A scheduled loop starts its `run`-th run (1-based)."""

    type: ClassVar[str] = "scheduled_run"
    run: int
    skipped: int = 0
    """Ticks that came while the previous run was still going (skipped, not queued)."""
    catch_up: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class StuckDetected(LoopEvent):
    type: ClassVar[str] = "stuck"
    iteration: int
    detector: str
    evidence: str
    action: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetWarning(Event):
    """A ledger crossed a warning threshold or was overshot by a CLI agent."""

    type: ClassVar[str] = "budget_warning"
    scope: str
    """"global" or a loop name."""
    dimension: str
    used: float
    limit: float
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlApplied(Event):
    """An operator action (pause, edit, inject, ...) taken by the core."""

    type: ClassVar[str] = "control"
    op: str
    loop: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice(Event):
    """Anything else worth a line: config reloads, worktree overlap, skipped ticks."""

    type: ClassVar[str] = "notice"
    loop: str | None = None
    level: Literal["info", "warning", "error"] = "info"
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopResult:
    """One loop's line in the run summary."""

    name: str
    state: LoopState
    iterations: int
    tokens: int
    usd: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(Event):
    """The last event of a run: per-loop results in run order, then totals."""

    type: ClassVar[str] = "summary"
    loops: tuple[LoopResult, ...]
    tokens: int
    usd: float
    wall_s: float
    exit_code: int
    reason: str = ""
    notes: tuple[str, ...] = ()
    """What a resume settled (charges at the reservation, interrupted iterations,
    processes a crashed supervisor left behind)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "ts": self.ts,
            "loops": [r.to_dict() for r in self.loops],
            "tokens": self.tokens,
            "usd": round(self.usd, 6),
            "wall_s": round(self.wall_s, 3),
            "exit_code": self.exit_code,
            "reason": self.reason,
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class EventsDropped(Event):
    """Told to a slow subscriber: this many events were coalesced away for it."""

    type: ClassVar[str] = "dropped"
    count: int


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        RunStarted,
        LoopStateChanged,
        IterationStarted,
        AgentOutput,
        OutputTruncated,
        ToolCalled,
        ToolReturned,
        UsageCharged,
        BudgetReserved,
        BudgetReleased,
        SessionSaved,
        LoopCheckpoint,
        CheckStarted,
        CheckFinished,
        IterationFinished,
        ScheduledRun,
        LoopForked,
        LandingStarted,
        LandingFinished,
        LoopAdded,
        LoopEdited,
        BudgetChanged,
        StuckDetected,
        BudgetWarning,
        ControlApplied,
        Notice,
        RunFinished,
        EventsDropped,
    )
}
"""type name -> class, for decoding events read from the journal or the socket."""


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from `to_dict()` output (journal rows, socket lines)."""
    kind = data.get("type")
    cls = EVENT_TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in names}
    if cls is LoopCheckpoint:
        kwargs["notes"] = tuple(kwargs.get("notes", ()))
    if cls is RunStarted:
        kwargs["loops"] = tuple(kwargs.get("loops", ()))
    if cls is RunFinished:
        kwargs["loops"] = tuple(LoopResult(**r) for r in kwargs.get("loops", ()))
        kwargs["notes"] = tuple(kwargs.get("notes", ()))
    return cls(**kwargs)
