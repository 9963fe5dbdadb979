"""Driving the `anthropic` agent against the fake Messages API (tests/fake_anthropic.py),
for the agent's own tests and for any test that needs an API loop.

`drive` runs one turn as the loop does: Usage charged into a real LedgerTurnBudget as
it arrives, the reservation released at the end, and the key (`KEY`, which the
`api_key` fixture in conftest.py puts in the environment) never in an event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fake_anthropic import FakeAnthropic
from helpers import agent_events, table

from supervisor.agents import AgentContext
from supervisor.agents.anthropic import AnthropicAgent
from supervisor.agents.base import AgentEvent, AgentRequest, TextDelta, Usage, Waiting
from supervisor.agents.kinds.anthropic import AnthropicAgentSpec
from supervisor.agents.ratelimit import RateLimiterRegistry
from supervisor.budget import Ledger
from supervisor.spec import ContextMode, Limits, LoopSpec
from supervisor.turn_budget import LedgerTurnBudget

KEY = "sk-ant-api03-TESTKEY-0123456789abcdef"
MODEL = "claude-haiku-4-5"


def make_agent(
    server: FakeAnthropic,
    workspace: Path,
    *,
    tools: Sequence[str] = (),
    context: ContextMode = "fresh",
    max_turns: int = 10,
    max_tokens: int = 200,
    timeout: float = 5.0,
    stall: float | None = 600.0,
    system: str | None = None,
    limiters: RateLimiterRegistry | None = None,
    base_url: str | None = "server",
) -> AnthropicAgent:
    spec = AnthropicAgentSpec(
        name="api",
        model=MODEL,
        max_tokens=max_tokens,
        system=system,
        base_url=server.base_url if base_url == "server" else base_url,
        tools=tuple(tools),
        max_turns=max_turns,
        timeout=timeout,
        stall=stall,
        tool_timeout=5.0,
    )
    loop = LoopSpec(name="l", agent="api", prompt="p", workspace=workspace, context=context)
    ctx = AgentContext(state_dir=workspace.parent, limiters=limiters)
    return AnthropicAgent(spec, loop, ctx, backoff_base=0.05, backoff_cap=0.2)


@dataclass
class Turn:
    events: list[AgentEvent]
    bookings: list[tuple[str, int]] = field(default_factory=list)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.of(TextDelta) if e.stream == "assistant")

    @property
    def usage(self) -> Usage:
        us = self.of(Usage)
        return Usage(
            input_tokens=sum(u.input_tokens for u in us),
            output_tokens=sum(u.output_tokens for u in us),
            cache_creation_tokens=sum(u.cache_creation_tokens for u in us),
            cache_read_tokens=sum(u.cache_read_tokens for u in us),
        )

    @property
    def last(self) -> AgentEvent:
        return self.events[-1]


async def drive(
    agent: AnthropicAgent,
    workspace: Path,
    prompt: str = "Say hello.",
    *,
    ledger: Ledger | None = None,
    iteration: int = 1,
) -> Turn:
    """One turn as the loop runs it: charge usage as it arrives, release at the end."""
    ledger = ledger or Ledger("l", Limits())
    turn = Turn([])
    budget = LedgerTurnBudget(
        ledger, on_booking=lambda kind, tokens, usd: turn.bookings.append((kind, tokens))
    )
    request = AgentRequest(
        loop="l", iteration=iteration, prompt=prompt, workspace=workspace, budget=budget
    )
    try:
        async with agent_events(agent, request) as stream:
            async for event in stream:
                turn.events.append(event)
                if isinstance(event, Usage):
                    budget.charge(event)
    finally:
        budget.release()
    assert KEY not in repr(turn.events)
    return turn


def assert_totals(server: FakeAnthropic, usage: Usage) -> None:
    t = server.totals
    assert usage.input_tokens == t.input_tokens
    assert usage.output_tokens == t.output_tokens
    assert usage.cache_creation_tokens == t.cache_creation_input_tokens
    assert usage.cache_read_tokens == t.cache_read_input_tokens


def waits(turn: Turn) -> list[Waiting]:
    return turn.of(Waiting)


def anthropic_agent_table(name: str, server: FakeAnthropic, **keys: object) -> str:
    keys.setdefault("model", MODEL)
    keys.setdefault("timeout", "5s")
    return table(f"agents.{name}", kind="anthropic", base_url=server.base_url, **keys)
