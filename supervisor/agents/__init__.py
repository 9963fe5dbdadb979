"""Agent kinds. `build_agent` picks the implementation for a spec (imported lazily,
so that e.g. the anthropic SDK is only loaded when an API loop exists)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor.agents.base import Agent
from supervisor.redact import Redactor
from supervisor.spec import (
    AgentSpec,
    AnthropicAgentSpec,
    ClaudeCodeAgentSpec,
    CommandAgentSpec,
    LoopSpec,
    Price,
    SimAgentSpec,
)

if TYPE_CHECKING:
    from supervisor.agents.ratelimit import RateLimiterRegistry


@dataclass(frozen=True, slots=True)
class AgentContext:
    """Run-wide things an agent may need besides its own spec."""

    state_dir: Path
    pricing: Mapping[str, Price] = field(default_factory=dict)
    limiters: RateLimiterRegistry | None = None
    redactor: Redactor = field(default_factory=Redactor.from_environment)
    """Secrets never kept in a conversation or sent back to a model (`redact`)."""


def build_agent(spec: AgentSpec, loop: LoopSpec, ctx: AgentContext) -> Agent:
    if isinstance(spec, SimAgentSpec):
        from supervisor.agents.sim import SimAgent

        return SimAgent(spec, loop)
    if isinstance(spec, CommandAgentSpec):
        from supervisor.agents.command import CommandAgent

        return CommandAgent(spec, loop)
    if isinstance(spec, AnthropicAgentSpec):
        from supervisor.agents.anthropic import AnthropicAgent

        return AnthropicAgent(spec, loop, ctx)
    if isinstance(spec, ClaudeCodeAgentSpec):
        from supervisor.agents.claude_code import ClaudeCodeAgent

        return ClaudeCodeAgent(spec, loop, ctx)
    raise TypeError(f"unknown agent spec {spec!r}")
