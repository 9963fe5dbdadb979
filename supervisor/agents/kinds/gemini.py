"""`kind = "gemini"`: Google's Gemini CLI over `gemini -p ... --output-format
stream-json` (implementation: `supervisor.agents.gemini`, parser
`supervisor.agents.gemini_json`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from supervisor.agents.base import Agent
from supervisor.agents.kind import AgentContext, AgentKind, TableReader
from supervisor.spec import LoopSpec, empty_map

PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
APPROVAL_MODES = ("default", "auto_edit", "yolo", "plan")
BINARY = "gemini"
"""The executable `command` defaults to (what a PATH check looks for)."""
DEFAULT_MODEL = "gemini-3.1-pro-preview"
"""What gemini-cli 0.61.0's default model ("auto") sent its turn to in the requests seen
by tests/fake_gemini.py (after a classifier call to a small model): the price a USD
budget uses without `model`."""


@dataclass(frozen=True, slots=True)
class GeminiAgentSpec:
    """The Gemini CLI in headless `-p` mode with `--output-format stream-json`."""

    name: str
    kind: Literal["gemini"] = "gemini"
    command: str = BINARY
    args: tuple[str, ...] = ()
    model: str | None = None
    approval_mode: str = "yolo"
    """`--approval-mode`: headless, a tool that asks for approval cannot get it, so a loop
    that must run commands and edit files needs `yolo` (or `auto_edit` for edits only)."""
    timeout: float | None = 1800.0
    stall: float | None = 300.0
    env: Mapping[str, str] = field(default_factory=empty_map)
    pass_env: tuple[str, ...] = ()
    reserve_tokens: int = 0
    """Tokens set aside before each call (the CLI cannot be clamped, only killed)."""


def _read(t: TableReader, name: str) -> GeminiAgentSpec:
    d = GeminiAgentSpec(name=name)
    env, pass_env = t.child_env()
    return GeminiAgentSpec(
        name=name,
        command=t.string("command", d.command, nonempty=True),
        args=t.strings("args", d.args),
        model=t.string("model", d.model, nonempty=True),
        approval_mode=t.choice("approval_mode", APPROVAL_MODES, d.approval_mode),
        timeout=t.duration("timeout", d.timeout, off=True),
        stall=t.duration("stall", d.stall, off=True),
        env=env,
        pass_env=pass_env,
        reserve_tokens=t.integer("reserve_tokens", d.reserve_tokens, minimum=0),
    )


def _build(spec: GeminiAgentSpec, loop: LoopSpec, ctx: AgentContext) -> Agent:
    from supervisor.agents.gemini import GeminiAgent

    return GeminiAgent(spec, loop, ctx)


def _describe(spec: GeminiAgentSpec) -> str:
    return f"{spec.name}(gemini {spec.model})" if spec.model else f"{spec.name}(gemini)"


def _resume_argv(spec: GeminiAgentSpec, session: str | None) -> tuple[str, ...]:
    """`gemini --resume SESSION` (its interactive UI) in the loop's workspace."""
    return (spec.command, "--resume", session) if session else (spec.command,)


def _model(spec: GeminiAgentSpec) -> str:
    return spec.model or DEFAULT_MODEL


def binary(spec: GeminiAgentSpec) -> str:
    """The executable a turn runs (for a binary-on-PATH check)."""
    return spec.command


KIND = AgentKind(
    name="gemini",
    spec=GeminiAgentSpec,
    read=_read,
    build=_build,
    describe=_describe,
    resume_argv=_resume_argv,
    # Its key, an API endpoint of one's own (with `security.auth.selectedType =
    # "gemini-api-key"` in its settings: see docs/agents.md), where it keeps its
    # settings and sessions (GEMINI_CLI_HOME, else HOME), proxies.
    child_env=("GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL", "GEMINI_CLI_HOME", *PROXIES),
    priced_model=_model,
    binary=binary,
    install_hint="npm install -g @google/gemini-cli",
)
