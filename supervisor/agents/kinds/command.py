"""`kind = "command"`: any CLI agent (implementation: `supervisor.agents.command`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from supervisor.agents.base import Agent
from supervisor.agents.kind import AgentContext, AgentKind, TableReader
from supervisor.spec import LoopSpec, empty_map

COMMAND_PLACEHOLDERS = frozenset({"prompt", "loop", "iteration", "workspace", "prompt_file"})
"""What a command agent's argv may contain (`CommandAgent.argv` substitutes them)."""
USAGE_PROTOCOLS = ("none", "json-lines")
"""`usage = "json-lines"`: stdout lines `{"loopvisor_usage": {...}}` are charged
(`supervisor.agents.usage_lines`); "none": only CPU time is metered."""


@dataclass(frozen=True, slots=True)
class CommandAgentSpec:
    """Any CLI agent: argv with `$prompt`-style placeholders, or the prompt on stdin."""

    name: str
    command: tuple[str, ...]
    kind: Literal["command"] = "command"
    stdin: bool = False
    timeout: float | None = None
    env: Mapping[str, str] = field(default_factory=empty_map)
    """Set for its process on top of the allow-listed environment (`childenv`)."""
    pass_env: tuple[str, ...] = ()
    """Variables of the supervisor's environment it inherits beyond the allow-list."""
    usage: Literal["none", "json-lines"] = "none"
    """How the agent reports its token usage (`USAGE_PROTOCOLS`)."""
    model: str | None = None
    """Prices usage lines that carry no `usd` (the price table, `[pricing]`)."""


def _read(t: TableReader, name: str) -> CommandAgentSpec:
    stdin = t.boolean("stdin", False)
    command: tuple[str, ...] = ()
    if t.require("command", f'agent "{name}"'):
        command = t.strings("command", (), nonempty=True)
    names = t.placeholders("command", command, COMMAND_PLACEHOLDERS)
    for index, used in enumerate(names):
        if stdin and "prompt" in used:
            t.item_error(
                "command",
                index,
                "$prompt cannot be used with stdin = true "
                "(the prompt is sent on stdin); use $prompt_file or drop stdin",
            )
    if command and not stdin and not set().union(*names) & {"prompt", "prompt_file"}:
        t.warn(
            "command",
            f'agent "{name}" never receives the prompt: add $prompt or $prompt_file to '
            "command, or set stdin = true",
        )
    env, pass_env = t.child_env()
    usage = t.choice("usage", USAGE_PROTOCOLS, "none")
    model = t.string("model", None, nonempty=True)
    if model is not None and usage == "none":
        t.warn(
            "model",
            f'agent "{name}" reports no usage, so its model prices nothing: '
            'add usage = "json-lines" or drop model',
        )
    return CommandAgentSpec(
        name=name,
        command=command,
        stdin=stdin,
        timeout=t.duration("timeout", None, off=True),
        env=env,
        pass_env=pass_env,
        usage="json-lines" if usage == "json-lines" else "none",
        model=model,
    )


def _build(spec: CommandAgentSpec, loop: LoopSpec, ctx: AgentContext) -> Agent:
    from supervisor.agents.command import CommandAgent

    return CommandAgent(spec, loop)


def _describe(spec: CommandAgentSpec) -> str:
    metered = f" {spec.usage}" if spec.usage != "none" else ""
    return f"{spec.name}(command {spec.command[0] if spec.command else '?'}{metered})"


def _priced_model(spec: CommandAgentSpec) -> str | None:
    """Its model, when its usage lines are priced from it (json-lines)."""
    return spec.model if spec.usage == "json-lines" else None


KIND = AgentKind(
    name="command",
    spec=CommandAgentSpec,
    read=_read,
    build=_build,
    describe=_describe,
    priced_model=_priced_model,
    binary=lambda spec: spec.command[0] if spec.command else None,
)
