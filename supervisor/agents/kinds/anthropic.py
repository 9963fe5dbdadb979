"""`kind = "anthropic"`: the Messages API (implementation: `supervisor.agents.anthropic`,
which imports the SDK: loaded only when a loop uses this kind)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from supervisor.agents.base import Agent
from supervisor.agents.kind import AgentContext, AgentKind, TableReader
from supervisor.agents.tools import TOOL_NAMES
from supervisor.spec import LoopSpec, empty_map

PROVIDER = "anthropic"
"""`[supervisor.rate_limits.anthropic]`: the limiter every API loop shares."""


@dataclass(frozen=True, slots=True)
class AnthropicAgentSpec:
    """The Messages API through the official SDK."""

    name: str
    model: str
    kind: Literal["anthropic"] = "anthropic"
    max_tokens: int = 4096
    temperature: float | None = None
    system: str | None = None
    base_url: str | None = None
    tools: tuple[str, ...] = ()
    max_turns: int = 10
    timeout: float | None = 1800.0
    """Total seconds one API request may take, first byte to last (then retried)."""
    stall: float | None = 600.0
    """Most seconds without a byte from the API (connect, headers, between events)."""
    tool_timeout: float = 120.0
    env: Mapping[str, str] = field(default_factory=empty_map)
    """Set for its `run` tool's commands on top of the allow-listed environment."""
    pass_env: tuple[str, ...] = ()


def _read(t: TableReader, name: str) -> AnthropicAgentSpec:
    d = AnthropicAgentSpec(name=name, model="")
    model = ""
    if t.require("model", f'agent "{name}"'):
        model = t.string("model", "", nonempty=True)
    tools = t.choices("tools", TOOL_NAMES, d.tools, noun="tool")
    system = t.string("system", d.system)
    if "system_file" in t:
        if "system" in t:
            t.error("system_file", "use either system or system_file, not both")
        found = t.file_text("system_file")
        system = found if found is not None else system
    env, pass_env = t.child_env()
    return AnthropicAgentSpec(
        name=name,
        model=model,
        max_tokens=t.integer("max_tokens", d.max_tokens, positive=True),
        temperature=t.number("temperature", d.temperature, minimum=0, maximum=1),
        system=system,
        base_url=t.string("base_url", d.base_url, nonempty=True),
        tools=tools,
        max_turns=t.integer("max_turns", d.max_turns, positive=True),
        timeout=t.duration("timeout", d.timeout, off=True),
        stall=t.duration("stall", d.stall, off=True),
        tool_timeout=t.duration("tool_timeout", d.tool_timeout),
        env=env,
        pass_env=pass_env,
    )


def _build(spec: AnthropicAgentSpec, loop: LoopSpec, ctx: AgentContext) -> Agent:
    from supervisor.agents.anthropic import AnthropicAgent

    return AnthropicAgent(spec, loop, ctx)


def _describe(spec: AnthropicAgentSpec) -> str:
    return f"{spec.name}(anthropic {spec.model})"


def _model(spec: AnthropicAgentSpec) -> str | None:
    return spec.model


KIND = AgentKind(
    name="anthropic",
    spec=AnthropicAgentSpec,
    read=_read,
    build=_build,
    describe=_describe,
    extra_keys=frozenset({"system_file"}),
    chat=True,
    rate_limit_provider=PROVIDER,
    priced_model=_model,
)
