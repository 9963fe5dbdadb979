"""`kind = "claude-code"`: the Claude Code CLI over stream-json (implementation:
`supervisor.agents.claude_code`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from supervisor.agents.base import Agent
from supervisor.agents.kind import AgentContext, AgentKind, TableReader
from supervisor.spec import LoopSpec, empty_map

_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


@dataclass(frozen=True, slots=True)
class ClaudeCodeAgentSpec:
    """The Claude Code CLI in `-p ... --output-format stream-json` mode."""

    name: str
    kind: Literal["claude-code"] = "claude-code"
    command: str = "claude"
    args: tuple[str, ...] = ()
    model: str | None = None
    timeout: float | None = 1800.0
    stall: float | None = 300.0
    partial_messages: bool = True
    env: Mapping[str, str] = field(default_factory=empty_map)
    pass_env: tuple[str, ...] = ()
    reserve_tokens: int = 0
    """Tokens set aside before each call (the CLI cannot be clamped, only killed)."""


def _read(t: TableReader, name: str) -> ClaudeCodeAgentSpec:
    d = ClaudeCodeAgentSpec(name=name)
    env, pass_env = t.child_env()
    return ClaudeCodeAgentSpec(
        name=name,
        command=t.string("command", d.command, nonempty=True),
        args=t.strings("args", d.args),
        model=t.string("model", d.model, nonempty=True),
        timeout=t.duration("timeout", d.timeout, off=True),
        stall=t.duration("stall", d.stall, off=True),
        partial_messages=t.boolean("partial_messages", d.partial_messages),
        env=env,
        pass_env=pass_env,
        reserve_tokens=t.integer("reserve_tokens", d.reserve_tokens, minimum=0),
    )


def _build(spec: ClaudeCodeAgentSpec, loop: LoopSpec, ctx: AgentContext) -> Agent:
    from supervisor.agents.claude_code import ClaudeCodeAgent

    return ClaudeCodeAgent(spec, loop, ctx)


def _describe(spec: ClaudeCodeAgentSpec) -> str:
    return f"{spec.name}(claude-code {spec.model})" if spec.model else f"{spec.name}(claude-code)"


def _resume_argv(spec: ClaudeCodeAgentSpec, session: str | None) -> tuple[str, ...]:
    """`claude --resume SESSION` in the loop's workspace: the operator takes over."""
    return (spec.command, "--resume", session) if session else (spec.command,)


def _fork_flags(at: str | None) -> tuple[str, ...]:
    """Fork the resumed session into a new one, cut after message `at` when given
    (`--resume-session-at` is hidden in 2.1.332; pinned by the real-CLI tests). One
    token each: a value cannot become a flag."""
    cut = (f"--resume-session-at={at}",) if at else ()
    return (*cut, "--fork-session")


KIND = AgentKind(
    name="claude-code",
    spec=ClaudeCodeAgentSpec,
    read=_read,
    build=_build,
    describe=_describe,
    resume_argv=_resume_argv,
    fork_flags=_fork_flags,
    child_env=("ANTHROPIC_*", "CLAUDE_*", *_PROXIES),
    binary=lambda spec: spec.command,
    install_hint="npm install -g @anthropic-ai/claude-code",
)
