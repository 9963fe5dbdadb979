"""One agent turn of a loop: reserve, stream, charge, relay, and kill when it must.

The loop (`loop.LoopRunner`) decides what a turn means; this module only runs it:
it hands the agent a budget gate, coalesces its token deltas into transcript
chunks, charges every usage delta as it arrives (killing the turn the moment a
CLI agent overshoots a ledger) and publishes them merged (`usage_merge`), counts
in-turn retries (429/529 backoff) against the loop's `retries`, and cancels a turn
that goes silent for `stall` seconds.

The agent is a producer task (`Agent.run(request, send)`) in the turn's task group,
writing to a bounded memory object stream that this task reads. The agent runs ahead
by at most `EVENT_BUFFER` events, in practice by what one read of its own gave it
(it waits for input, and the turn books meanwhile); its `reserve` waits until the
turn has booked everything it sent (`_booked`), so a reservation never misses usage
reported before it. The turn ends by cancelling that task group.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream

from supervisor import cpumeter
from supervisor import events as ev
from supervisor.agents.base import (
    Agent,
    AgentEvent,
    AgentFailed,
    AgentRequest,
    BudgetExhausted,
    Done,
    EventSend,
    Resumed,
    TextDelta,
    ToolCall,
    ToolResult,
    Usage,
    Waiting,
    forks_sessions,
)
from supervisor.budget import Ledger
from supervisor.redact import Redactor, StreamRedactor
from supervisor.sizes import output_limit_notice
from supervisor.spec import AgentSpec, LoopSpec, Price
from supervisor.stuck import StuckDetector, StuckVerdict
from supervisor.transcript import OutputCap, OutputCoalescer
from supervisor.turn_budget import LedgerTurnBudget
from supervisor.usage_merge import UsageMerger

LAST_OUTPUT_LIMIT = 4000
"""Characters of an agent reply kept as `$last_output`."""
EVENT_BUFFER = 64
"""Events an agent may send before the turn has read them: a burst (a chunk's lines,
a fast model's tokens) passes without a task switch per event (`agents.base.emit`),
and memory stays bounded (a command agent's event holds up to one 64 KiB read)."""


@dataclass(slots=True)
class TurnResult:
    """What one agent turn produced."""

    output: str = ""
    failure: AgentFailed | None = None
    exhausted: str | None = None
    stalled: StuckVerdict | None = None
    tokens: int = 0
    usd: float = 0.0
    retries_exhausted: str | None = None


class TurnHost(Protocol):
    """What a turn needs from its loop."""

    spec: LoopSpec
    agent: Agent
    agent_spec: AgentSpec
    ledger: Ledger
    pricing: dict[str, Price]
    detector: StuckDetector
    retries_used: int
    state: ev.LoopState
    check_output: str
    redactor: Redactor
    output_cap: int
    """Bytes of agent output an iteration publishes in full (`transcript.OutputCap`)."""

    def emit(self, event: ev.Event) -> None: ...

    def emit_output(self, n: int, text: str, stream: str) -> None: ...

    def set_state(
        self,
        state: ev.LoopState,
        reason: str,
        iteration: int | None = None,
        wait: float | None = None,
        *,
        cause: ev.StateCause = "",
    ) -> None: ...


class AgentTurn:
    """Runs `host.agent` once on `prompt`. An operator turn (step-in chat) keeps the
    conversation, changes no loop state and has no stall watchdog."""

    def __init__(
        self,
        host: TurnHost,
        n: int,
        prompt: str,
        *,
        env: Mapping[str, str],
        operator: bool = False,
        on_scope: Callable[[anyio.CancelScope | None], None] = lambda _: None,
        resume: bool = False,
    ) -> None:
        self.host = host
        self.resume = resume
        """Continue the agent's session (a turn a usage limit cut off runs again)."""
        self.n = n
        self.prompt = prompt
        self.env = env
        self.operator = operator
        self._on_scope = on_scope
        self.result = TurnResult()
        self._last_activity = time.monotonic()
        self._cpu_booked = 0.0
        """CPU seconds the agent reported this turn (its groups' totals include them)."""
        self._cpu_credit = 0.0
        """CPU seconds booked by the sampler when it killed the turn, which the agent's
        own later report (if one gets through) must not book again."""
        self._refused: str | None = None
        """Why the budget refused the agent a reservation (`BudgetExhausted`)."""
        self._usage = UsageMerger(host.emit, loop=host.spec.name, iteration=n)
        """Usage is charged per report, published merged (`usage_merge`)."""

    def _set(
        self,
        state: ev.LoopState,
        reason: str,
        wait: float | None = None,
        cause: ev.StateCause = "",
    ) -> None:
        if not self.operator:
            self.host.set_state(state, reason, self.n, wait, cause=cause)

    def _running(self) -> None:
        self._set("running", f"agent turn {self.n}/{self.host.spec.max_iterations}")

    def _booking(self, kind: str, tokens: int, usd: float) -> None:
        cls = ev.BudgetReserved if kind == "reserved" else ev.BudgetReleased
        self._usage.flush()  # the charges of a reservation come before its release
        self.host.emit(cls(loop=self.host.spec.name, iteration=self.n, tokens=tokens, usd=usd))

    async def run(self) -> TurnResult:
        host, spec, n = self.host, self.host.spec, self.n
        send, receive = anyio.create_memory_object_stream[AgentEvent](EVENT_BUFFER)
        budget = LedgerTurnBudget(
            host.ledger,
            pricing=host.pricing,
            default_model=getattr(host.agent_spec, "model", None),
            on_wait=lambda why: self._set("waiting", why),
            on_resume=self._running,
            on_booking=self._booking,
            settle=lambda: _booked(receive),
        )
        if spec.context == "fresh" and not self.operator and not self.resume:
            host.agent.reset()
        request = AgentRequest(
            loop=spec.name,
            iteration=n,
            prompt=self.prompt,
            workspace=spec.workspace,
            budget=budget,
            env=self.env,
            resume=self.resume,
        )
        cap = OutputCap(
            lambda text, stream: host.emit_output(n, text, stream),
            lambda dropped: host.emit(
                ev.OutputTruncated(
                    loop=spec.name, iteration=n, dropped=dropped, limit=host.output_cap
                )
            ),
            limit=host.output_cap,
            on_limit=lambda: host.emit(
                ev.Notice(
                    loop=spec.name,
                    level="warning",
                    message=output_limit_notice(n, host.output_cap),
                )
            ),
        )
        coalescer = OutputCoalescer(cap.add, clock=time.monotonic, tick=self._usage.tick)
        self._usage.on_pending = coalescer.wake
        self._text = StreamRedactor(host.redactor, coalescer.add)
        stall = None if self.operator else spec.stuck.stall
        try:
            with anyio.CancelScope() as scope:
                self._on_scope(scope)
                async with anyio.create_task_group() as tg:
                    if stall:
                        tg.start_soon(self._watch_stall, stall, scope)
                    tg.start_soon(coalescer.run_flusher)
                    over = self._cpu_over_callback(budget, scope)
                    with cpumeter.allowance(host.ledger.cpu_left(), over):  # for its groups
                        tg.start_soon(self._produce, request, send)
                    try:
                        await self._consume(receive, budget, coalescer, scope)
                    finally:  # cancel the agent first: then closing breaks no send of it
                        tg.cancel_scope.cancel()
                        receive.close()
        finally:
            self._on_scope(None)
            self._text.flush()
            coalescer.flush()
            cap.finish()
            self._usage.flush()
            budget.release()
        agent = host.agent
        host.emit(
            ev.SessionSaved(
                loop=spec.name,
                iteration=n,
                session_id=host.agent.session_id,
                conversation=host.agent.conversation(),
                last_output=self.result.output[-LAST_OUTPUT_LIMIT:],
                check_output=host.check_output,
                session_at=agent.session_at if forks_sessions(agent) else None,
            )
        )
        return self.result

    async def _produce(self, request: AgentRequest, send: EventSend) -> None:
        """The agent's task: its turn, then the end of the stream."""
        with send:
            try:
                await self.host.agent.run(request, send)
            except BudgetExhausted as exc:  # no reservation: the turn ends (`_consume`)
                self._refused = exc.reason

    async def _consume(
        self,
        receive: MemoryObjectReceiveStream[AgentEvent],
        budget: LedgerTurnBudget,
        coalescer: OutputCoalescer,
        scope: anyio.CancelScope,
    ) -> None:
        """Book and publish what the agent sends, up to its final event. What is
        buffered is read without a checkpoint each; nothing here awaits but the
        stream (`_booked` relies on it)."""
        while True:
            try:
                item = receive.receive_nowait()
            except anyio.WouldBlock:
                try:
                    item = await receive.receive()
                except anyio.EndOfStream:
                    break
            except anyio.EndOfStream:
                break
            self._last_activity = time.monotonic()
            if isinstance(item, TextDelta):
                self._text.add(item.text, item.stream)
                continue
            if not isinstance(item, Usage):  # usage may fall inside a split secret
                self._text.flush()
                coalescer.flush()  # text before a tool call, a wait, the end: in order
                self._usage.flush()
            item = self.host.redactor.fields(item)
            if not self._relay(item, budget):
                scope.cancel()
                return
            if isinstance(item, Done | AgentFailed):
                self.result.output = item.output
                if isinstance(item, AgentFailed):
                    self.result.failure = item
                return
        if self._refused is not None:  # after the events sent before it
            self.result.exhausted = self._refused

    def _cpu_over_callback(
        self, budget: LedgerTurnBudget, scope: anyio.CancelScope
    ) -> Callable[[float], None]:
        """What the CPU sampler calls when a process group of this turn has spent the
        CPU the loop and global budgets had left when the turn began: book what the
        agent has not reported yet, and kill the turn (`overshot` says why)."""

        def over(group_cpu_s: float) -> None:
            unbooked = max(0.0, group_cpu_s - self._cpu_booked)
            self._relay(Usage(cpu_s=unbooked), budget)
            self._usage.flush()
            self._cpu_credit += unbooked
            if self.result.exhausted is None:
                self.result.exhausted = cpu_overshot(self.host.ledger)
            scope.cancel()

        return over

    def _relay(self, item: AgentEvent, budget: LedgerTurnBudget) -> bool:
        """Book and publish one agent event; False when the turn must end now."""
        host, name, n, result = self.host, self.host.spec.name, self.n, self.result
        if isinstance(item, Usage):
            if self._cpu_credit and item.cpu_s:  # already booked by `over`
                taken = min(self._cpu_credit, item.cpu_s)
                self._cpu_credit -= taken
                item = dataclasses.replace(item, cpu_s=item.cpu_s - taken)
            self._cpu_booked += item.cpu_s
            charge = budget.charge(item)
            result.tokens += charge.tokens
            result.usd += charge.usd
            self._usage.add(
                input_tokens=item.input_tokens,
                output_tokens=item.output_tokens,
                cache_creation_tokens=item.cache_creation_tokens,
                cache_read_tokens=item.cache_read_tokens,
                usd=charge.usd,
                cpu_s=item.cpu_s,
            )
            result.exhausted = overshot(host.ledger)
            if result.exhausted is not None:  # the turn dies on this report: say so now
                self._usage.flush()
            return result.exhausted is None
        if isinstance(item, ToolCall):
            host.emit(
                ev.ToolCalled(
                    loop=name, iteration=n, tool_id=item.tool_id, name=item.name, input=item.input
                )
            )
        elif isinstance(item, ToolResult):
            host.emit(
                ev.ToolReturned(
                    loop=name,
                    iteration=n,
                    tool_id=item.tool_id,
                    output=item.output,
                    is_error=item.is_error,
                )
            )
        elif isinstance(item, Waiting):
            if item.retry:
                host.retries_used += 1
                limit = host.spec.budget.retries
                if host.retries_used > limit:
                    result.retries_exhausted = f"{limit} retries used; last: {item.reason}"
                    return False
            self._set("waiting", item.reason, item.seconds, "rate_limit" if item.long_limit else "")
        elif isinstance(item, Resumed):
            self._running()
        return True

    async def _watch_stall(self, stall: float, scope: anyio.CancelScope) -> None:
        while True:
            silent = time.monotonic() - self._last_activity
            if silent >= stall:
                if self.host.state == "waiting":  # backoff is not a stall
                    self._last_activity = time.monotonic()
                else:
                    self.result.stalled = self.host.detector.stall(silent)
                    scope.cancel()
                    return
            await anyio.sleep(min(1.0, max(0.05, stall / 10)))


async def _booked(receive: MemoryObjectReceiveStream[AgentEvent]) -> None:
    """Return once the turn has booked every event the agent sent: it waits in
    `receive` again with nothing buffered (or has stopped reading). The turn books
    synchronously, so this takes a checkpoint or two, and only before a reservation."""
    while True:
        stats = receive.statistics()
        if stats.open_receive_streams == 0 or (
            stats.tasks_waiting_receive and not stats.current_buffer_used
        ):
            return
        await anyio.lowlevel.checkpoint()


def overshot(ledger: Ledger) -> str | None:
    """A ledger spent past its limit: the turn must die now (CLI agents only get here)."""
    for node in ledger.chain():
        lim = node.limits
        where = "global" if node.name == "global" else f"loop {node.name!r}"
        if lim.tokens is not None and node.tokens_spent > lim.tokens:
            over = node.tokens_spent - lim.tokens
            return f"{where} token budget crossed mid-turn (overshoot {over:,} tokens); killed"
        if lim.usd is not None and node.usd_spent > lim.usd + 1e-9:
            over_usd = node.usd_spent - lim.usd
            return f"{where} USD budget crossed mid-turn (overshoot ${over_usd:.4f}); killed"
    return None


def cpu_overshot(ledger: Ledger) -> str:
    """Why the CPU sampler killed a turn: the first ledger whose CPU budget it spent."""
    for node in ledger.chain():
        if node.limits.cpu is not None and node.cpu_spent >= node.limits.cpu:
            where = "global" if node.name == "global" else f"loop {node.name!r}"
            over = node.cpu_spent - node.limits.cpu
            return f"{where} CPU budget crossed mid-turn (overshoot {over:.1f}s); killed"
    return "CPU budget crossed mid-turn; killed"
