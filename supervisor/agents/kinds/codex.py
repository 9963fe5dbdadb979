"""`kind = "codex"`: OpenAI's Codex CLI over `codex exec --json` (implementation:
`supervisor.agents.codex`, parser `supervisor.agents.codex_json`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from supervisor.agents.base import Agent
from supervisor.agents.kind import AgentContext, AgentKind, TableReader
from supervisor.spec import LoopSpec, empty_map

BINARY = "codex"
"""The executable `command` defaults to (what a PATH check looks for)."""
PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
SANDBOXES = ("read-only", "workspace-write", "danger-full-access")
DEFAULT_MODEL = "gpt-6.1-sol"
"""What codex-cli 0.169.0 asks the API for when no model is set (seen in its
requests to tests/fake_openai.py): the price a USD budget uses without `model`."""


@dataclass(frozen=True, slots=True)
class CodexAgentSpec:
    """The Codex CLI in `codex exec --json` mode."""

    name: str
    kind: Literal["codex"] = "codex"
    command: str = BINARY
    args: tuple[str, ...] = ()
    model: str | None = None
    sandbox: str = "workspace-write"
    """Where its shell commands may write (`-c sandbox_mode=...`, which `codex exec
    resume` takes too; `--sandbox` it does not). `codex exec` alone defaults to
    read-only, which a loop that must change files cannot use."""
    timeout: float | None = 1800.0
    stall: float | None = 300.0
    env: Mapping[str, str] = field(default_factory=empty_map)
    pass_env: tuple[str, ...] = ()
    reserve_tokens: int = 0
    """Tokens set aside before each call (the CLI cannot be clamped, only killed)."""


def _read(t: TableReader, name: str) -> CodexAgentSpec:
    d = CodexAgentSpec(name=name)
    env, pass_env = t.child_env()
    return CodexAgentSpec(
        name=name,
        command=t.string("command", d.command, nonempty=True),
        args=t.strings("args", d.args),
        model=t.string("model", d.model, nonempty=True),
        sandbox=t.choice("sandbox", SANDBOXES, d.sandbox),
        timeout=t.duration("timeout", d.timeout, off=True),
        stall=t.duration("stall", d.stall, off=True),
        env=env,
        pass_env=pass_env,
        reserve_tokens=t.integer("reserve_tokens", d.reserve_tokens, minimum=0),
    )


def _build(spec: CodexAgentSpec, loop: LoopSpec, ctx: AgentContext) -> Agent:
    from supervisor.agents.codex import CodexAgent

    return CodexAgent(spec, loop, ctx)


def _describe(spec: CodexAgentSpec) -> str:
    return f"{spec.name}(codex {spec.model})" if spec.model else f"{spec.name}(codex)"


def _resume_argv(spec: CodexAgentSpec, session: str | None) -> tuple[str, ...]:
    """`codex resume THREAD` (its interactive TUI) in the loop's workspace."""
    return (spec.command, "resume", session) if session else (spec.command,)


def binary(spec: CodexAgentSpec) -> str:
    """The executable a turn runs (for a binary-on-PATH check)."""
    return spec.command


def _model(spec: CodexAgentSpec) -> str:
    return spec.model or DEFAULT_MODEL


KIND = AgentKind(
    name="codex",
    spec=CodexAgentSpec,
    read=_read,
    build=_build,
    describe=_describe,
    resume_argv=_resume_argv,
    # Its key (`codex exec` reads CODEX_API_KEY for the built-in provider; a custom
    # provider's `env_key`, often OPENAI_API_KEY), where its sessions live, proxies.
    child_env=("CODEX_API_KEY", "OPENAI_API_KEY", "CODEX_HOME", *PROXIES),
    priced_model=_model,
    binary=binary,
    install_hint="npm install -g @openai/codex",
)
