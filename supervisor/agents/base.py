"""The Agent protocol every kind implements, and the typed events an agent sends.

An agent turn is `await agent.run(request, send)`: a producer task that writes
`AgentEvent`s to `send` (`emit(send, event)`), one end of a bounded anyio memory
object stream, and returns after sending a `Done` or an `AgentFailed`. The turn
(`supervisor.turn`) starts it in its own task group and reads the other end: it
charges every `Usage` as it arrives (usage events are deltas, never running totals),
so that a CLI agent crossing its budget can be killed mid-turn, and `reserve` waits
until the usage sent before it is booked. The turn closes the stream; an agent
never does.

Ending a turn is cancelling its task group (a stop, a timeout, a budget crossing,
the final event read): the agent must stop there and kill any child process group;
`aclose()` is the explicit form of the same. Nothing `yield`s inside a cancel scope
or a task group (anyio's cancellation rules; `tests/e2e/test_no_yield_in_scopes.py`):
an agent's scopes and task groups live in its own task.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeAlias, TypeGuard, runtime_checkable

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from supervisor.agents.usagelimit import UsageLimit


@dataclass(frozen=True, slots=True)
class AgentRequest:
    """One turn: the rendered prompt plus what the agent may spend."""

    loop: str
    iteration: int
    prompt: str
    workspace: Path
    budget: TurnBudget
    """Reserve before every model request; raises BudgetExhausted when nothing is left."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for child processes (LOOPVISOR_LOOP, ...)."""
    history: tuple[str, ...] = ()
    """Operator messages injected for this turn (already part of `prompt`)."""
    resume: bool = False
    """Continue the agent's current session whatever the loop's context (the turn a
    usage limit cut off runs again where it stopped)."""


class BudgetExhausted(Exception):
    """No ledger in the chain can grant the minimum a request needs, and waiting won't help."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TurnBudget(Protocol):
    """The loop's budget gate, handed to the agent for each turn.

    `reserve` is called before every model request (a tool round is a new request);
    it waits (state `waiting`) while other turns hold what is needed, and returns the
    output tokens granted: `max_tokens` must be clamped to it. The reservation stays
    open until the next `reserve` or the end of the turn; `Usage` events draw on it.
    """

    async def reserve(
        self,
        *,
        input_tokens: int,
        max_output_tokens: int,
        model: str | None = None,
        minimum_output_tokens: int = 1,
        usd_per_token: float | None = None,
    ) -> int: ...

    def remaining_tokens(self) -> int | None:
        """Tokens the loop and global ledgers still have (None: unlimited)."""
        ...


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    stream: str = "assistant"
    """assistant | stdout | stderr | raw"""


@dataclass(frozen=True, slots=True)
class ToolCall:
    tool_id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolResult:
    tool_id: str
    output: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens (and optionally dollars) consumed since the previous Usage event."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    usd: float | None = None
    """Known cost of this delta; None: the loop prices it from the model's table."""
    model: str | None = None
    cpu_s: float = 0.0

    @property
    def tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_tokens
            + self.cache_read_tokens
        )


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """The agent's own conversation id (Claude Code session), kept for resume/step-in."""

    session_id: str


@dataclass(frozen=True, slots=True)
class Waiting:
    """The agent is held back (rate limit, backoff); shown as state `waiting`.

    With `retry=True` the wait follows a failed request (429, 529, 5xx, cut stream)
    and counts toward the loop's `retries`; the loop ends the turn once they run out.
    """

    reason: str
    seconds: float | None = None
    retry: bool = False
    long_limit: bool = False
    """A rate limit with a long retry-after (an account's window, not a blip): shown
    with cause "rate_limit", never counted as a retry."""


@dataclass(frozen=True, slots=True)
class Resumed:
    """The agent is running again after a `Waiting`."""


@dataclass(frozen=True, slots=True)
class Done:
    """The turn ended normally."""

    output: str
    """The agent's final text, used for `$last_output`, done markers and stuck detection."""
    session_id: str | None = None
    stop_reason: str | None = None


@dataclass(frozen=True, slots=True)
class AgentFailed:
    """The turn ended in an error that counts toward the loop's `retries`."""

    message: str
    retryable: bool = True
    output: str = ""
    retry_after: float | None = None
    usage_limit: UsageLimit | None = None
    """The account's usage window is spent: the loop waits for its reset instead of
    counting a failure (`supervisor.usagewait`)."""


AgentEvent: TypeAlias = (
    TextDelta
    | ToolCall
    | ToolResult
    | Usage
    | SessionStarted
    | Waiting
    | Resumed
    | Done
    | AgentFailed
)


EventSend: TypeAlias = MemoryObjectSendStream[AgentEvent]
"""Where an agent writes its events (with `emit`); the turn reads the other end."""


async def emit(send: EventSend, event: AgentEvent) -> None:
    """Send `event` to the turn: at once while the stream has room, so that a burst
    (a chunk's lines, a fast model's tokens) costs no task switch per event; else wait
    until the turn has read. (`await send.send(event)` is correct too, only slower:
    it always takes a checkpoint.) A send after the turn stopped reading waits for
    the cancellation the turn has sent first."""
    try:
        send.send_nowait(event)
    except (anyio.WouldBlock, anyio.BrokenResourceError):
        await send.send(event)


async def deliver(send: EventSend, event: AgentEvent) -> None:
    """`emit`, even when a cancel scope of the agent's own (a timeout, a stopped read)
    is cancelled meanwhile: what the agent read reaches the turn, as it did when
    agents were generators whose `yield` no cancellation could interrupt. The turn's
    own end still ends the agent: the turn cancels it, then closes its end, which
    breaks this send, and the agent's next await is cancelled."""
    try:
        send.send_nowait(event)
    except (anyio.WouldBlock, anyio.BrokenResourceError):
        with anyio.CancelScope(shield=True), contextlib.suppress(anyio.BrokenResourceError):
            await send.send(event)  # broken: the turn is over and has cancelled us


@runtime_checkable
class Agent(Protocol):
    """One agent instance per loop; it may keep conversation state across turns."""

    async def run(self, request: AgentRequest, send: EventSend) -> None:
        """Run one turn, writing its events to `send`; return after the last one
        (`Done` or `AgentFailed`). Cancellation stops the turn."""
        ...

    @property
    def session_id(self) -> str | None:
        """The conversation to continue next turn (context = continue)."""
        ...

    def restore(self, session_id: str | None, history: list[dict[str, Any]] | None) -> None:
        """Continue a conversation after a supervisor restart (resume)."""
        ...

    def conversation(self) -> list[dict[str, Any]] | None:
        """The conversation so far (API agents), journalled so that resume restores it."""
        ...

    def reset(self) -> None:
        """Forget the conversation (context = fresh, or operator restart)."""
        ...

    async def aclose(self) -> None:
        """Release clients and kill anything still running."""
        ...


@runtime_checkable
class ForksSessions(Protocol):
    """An agent whose conversations live in its own session store and can be branched
    there (Claude Code): a fork of a loop continues the parent's session as a new one
    instead of being handed the messages through `Agent.restore`."""

    def fork_session(self, session_id: str, at: str | None = None) -> None:
        """Branch `session_id` (cut after message `at`, when given) on the next turn."""
        ...

    @property
    def session_at(self) -> str | None:
        """Where the session stands after the last turn (the CLI's message `uuid`):
        journalled with it, so a fork from that iteration can cut the session there."""
        ...

    @property
    def forking(self) -> str | None:
        """The other loop's session this one still forks (no turn of its own yet)."""
        ...

    @property
    def fork_at(self) -> str | None:
        """The message `forking` is cut after (None: the whole session)."""
        ...


@runtime_checkable
class Accounted(Protocol):
    """An agent that knows which login it spends (`usagelimit.account_key`), so that
    its loop can wait out a usage limit another loop of the same account hit."""

    def account(self) -> str: ...


_IMPLEMENTS: dict[tuple[type, type], bool] = {}


def _implements(obj: object, protocol: type) -> bool:
    """`isinstance(obj, protocol)`, decided once per class: Python 3.11 walks the
    protocol's members at every check of a runtime-checkable protocol, and a turn
    asked two of them per iteration (~2% of a 1,000-sim-loop run's py-spy samples).
    Sound for these protocols: their members are methods and properties of a class."""
    key = (type(obj), protocol)
    known = _IMPLEMENTS.get(key)
    if known is None:
        known = _IMPLEMENTS[key] = isinstance(obj, protocol)
    return known


def forks_sessions(agent: object) -> TypeGuard[ForksSessions]:
    return _implements(agent, ForksSessions)


def accounted(agent: object) -> TypeGuard[Accounted]:
    return _implements(agent, Accounted)


def merge_text(events: Iterable[AgentEvent]) -> list[AgentEvent]:
    """`events` with each run of adjacent `TextDelta`s of one stream merged into one:
    what one pipe read parsed into (many raw lines, many token deltas) reaches the
    turn as one delta per stream, not one per line. Other events keep their place."""
    merged: list[AgentEvent] = []
    for stream, run in itertools.groupby(events, key=_text_stream):
        if stream is None:
            merged.extend(run)
            continue
        texts = [e.text for e in run if isinstance(e, TextDelta)]
        merged.append(TextDelta(texts[0] if len(texts) == 1 else "".join(texts), stream=stream))
    return merged


def _text_stream(event: AgentEvent) -> str | None:
    return event.stream if isinstance(event, TextDelta) else None


def estimate_tokens(text: str) -> int:
    """A conservative token estimate (about 3.5 characters a token, rounded up)."""
    return max(1, (len(text) * 2 + 6) // 7)
