"""Typed event records: the only thing that crosses from the core to a UI.

Every subscriber (TUI, headless printer, journal, control socket) sees the same
records. Each is a frozen dataclass with a stable snake_case `type` name and a
`to_dict()` that is JSON-ready, so the JSON-lines output and the socket protocol
are just these dicts.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias

LoopState: TypeAlias = Literal[
    "pending",
    "running",
    "checking",
    "waiting",
    "pausing",
    "paused",
    "stuck",
    "scheduled",
    "succeeded",
    "failed",
    "exhausted",
    "stopped",
]
END_STATES: frozenset[str] = frozenset({"succeeded", "failed", "exhausted", "stopped"})
"""States a loop never leaves on its own (restart starts it anew)."""
ATTENTION_STATES: frozenset[str] = frozenset({"paused", "stuck"})
"""States in which a loop waits for a person."""

StateCause: TypeAlias = Literal["", "usage_limit", "rate_limit", "budget"]

IterationOutcome: TypeAlias = Literal[
    "succeeded",
    "continue",
    "failed",
    "exhausted",
    "stuck",
    "stopped",
    "error",
    "interrupted",
]


def _now() -> float:
    return time.time()


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event: wall-clock timestamp (epoch seconds)."""

    type: ClassVar[str] = "event"
    ts: float = field(default_factory=_now)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"type": self.type, **data}


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopEvent(Event):
    """An event that concerns one loop."""

    loop: str


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
class LoopForked(LoopEvent):
    """A new loop (`loop`) forked from `parent` at the end of its iteration `iteration`
    (`fork.py`): its worktree starts at `commit` and its conversation from what the
    parent's agent had then. Journalled first, so `--resume` brings the fork back: it
    is not in loops.toml, and this record is how it is rebuilt from its parent."""

    type: ClassVar[str] = "forked"
    parent: str
    iteration: int
    commit: str
    """The commit its branch starts from (iteration N's checkpoint, or the nearest
    earlier one, or the parent's base when none changed anything)."""
    prompt: str | None = None
    """Its own prompt template (`--prompt-file`); None: the parent's."""
    session_id: str | None = None
    """The parent's agent session after iteration N (Claude Code: `--fork-session`)."""
    session_at: str | None = None
    """Where that session stood after iteration N (Claude Code: `--resume-session-at`);
    None when the journal did not say (an older one): the fork gets the whole session."""
    conversation: list[dict[str, Any]] | None = None
    """The parent's API conversation after iteration N."""
    last_output: str = ""
    check_output: str = ""
    """`$last_output` and `$check_output` as they were after iteration N."""

    @property
    def label(self) -> str:
        """How status and history show the parent: "LOOP@N"."""
        return f"{self.parent}@{self.iteration}"


@dataclass(frozen=True, slots=True, kw_only=True)
class LandingStarted(LoopEvent):
    """A worktree loop that succeeded begins its `on_success` landing (`landing.py`).
    Until a `LandingFinished` follows, `--resume` lands it (again: landing is
    idempotent), even after a kill -9 in the middle of it."""

    type: ClassVar[str] = "landing_started"
    mode: str
    """Its `on_success`: "land", "push" or "pr"."""
    succeeded: str = ""
    """Why the loop succeeded (its reason before the landing's outcome joined it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LandingFinished(LoopEvent):
    """The `on_success` landing is settled: done (by `on_success` or the operator's
    `land`), or given up (the operator stopped the loop): no `--resume` repeats it."""

    type: ClassVar[str] = "landing_finished"
    mode: str
    landed: bool
    message: str = ""
    commit: str = ""
    """The target's commit after a merge, the pushed commit after a push or PR."""
    ref: str = ""
    """The remote ref pushed to ("origin/loopvisor/fix")."""
    url: str = ""
    """The pull request's URL."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopAdded(LoopEvent):
    """A new loop (`loop`) started in a running supervisor by the `add` op, made like
    the run's loop `like` (its agent, workspace kind, checks, budget retries; `added.py`)
    with its own prompt, max_iterations and limits, all as they were when it was added.
    Journalled first, so `--resume` rebuilds it as it does a fork: it is not in
    loops.toml."""

    type: ClassVar[str] = "added"
    like: str
    prompt: str
    max_iterations: int
    limits: dict[str, Any]
    """Its own limits (`spec.Limits` as a dict)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopEdited(LoopEvent):
    """An operator's edit of a loop (`edit`): the values it set, from the loop's next
    iteration; a field left None was not changed. Durable state, not a log line:
    `--resume` and the journal's `status --json` apply a loop's edits in order, over
    its spec (also across a restart of the loop: the edit is the loop's, not its run's)."""

    type: ClassVar[str] = "edited"
    prompt: str | None = None
    max_iterations: int | None = None
    limits: dict[str, Any] | None = None
    """`spec.Limits` as a dict (all four keys: an edit replaces the loop's limits)."""

    def then(self, later: LoopEdited) -> LoopEdited:
        """This edit followed by `later`: `later`'s values where it set them."""
        return dataclasses.replace(
            later,
            prompt=self.prompt if later.prompt is None else later.prompt,
            max_iterations=(
                self.max_iterations if later.max_iterations is None else later.max_iterations
            ),
            limits=self.limits if later.limits is None else later.limits,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetChanged(Event):
    """The operator replaced the run's global limits (`budget`): durable like
    `LoopEdited`, so `--resume` and the journal's status keep them."""

    type: ClassVar[str] = "budget_changed"
    limits: dict[str, Any]
    """`spec.Limits` as a dict."""


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
