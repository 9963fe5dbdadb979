"""`kind = "echo"`: a whole agent kind in one file, for the registry's tests.

It is what `supervisor/agents/kinds/<kind>.py` holds for a real kind (a small kind
needs no separate implementation module): the spec, its table reader, the agent,
and `KIND` with its abilities. The tests register it with
`monkeypatch.setitem(registry.KINDS, "echo", KIND)`; a real kind gets one line in
`supervisor/agents/registry.py` instead.

The agent replies with the first line of its prompt and `suffix`, a token a word,
taking a request from the `echo` rate limiter when the run has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from supervisor.agents.base import (
    AgentRequest,
    Done,
    EventSend,
    SessionStarted,
    TextDelta,
    Usage,
    emit,
)
from supervisor.agents.kind import AgentContext, AgentKind, TableReader
from supervisor.agents.ratelimit import RateLimiter
from supervisor.spec import LoopSpec


@dataclass(frozen=True, slots=True)
class EchoAgentSpec:
    name: str
    kind: Literal["echo"] = "echo"
    suffix: str = ""
    """Appended to the reply (a loop's done marker, say)."""
    command: str = "echo-cli"
    """What step-in runs to continue the session in a terminal."""


def _read(t: TableReader, name: str) -> EchoAgentSpec:
    d = EchoAgentSpec(name=name)
    return EchoAgentSpec(
        name=name,
        suffix=t.string("suffix", d.suffix),
        command=t.string("command", d.command, nonempty=True),
    )


class EchoAgent:
    def __init__(self, spec: EchoAgentSpec, loop: LoopSpec, ctx: AgentContext) -> None:
        self.spec = spec
        self.loop = loop
        self.limiter: RateLimiter | None = (
            ctx.limiters.for_provider("echo") if ctx.limiters is not None else None
        )
        self._session: str | None = None

    @property
    def session_id(self) -> str | None:
        return self._session

    def restore(self, session_id: str | None, history: list[dict[str, Any]] | None) -> None:
        self._session = session_id

    def conversation(self) -> list[dict[str, Any]] | None:
        return None

    def reset(self) -> None:
        self._session = None

    async def aclose(self) -> None:
        return None

    async def run(self, request: AgentRequest, send: EventSend) -> None:
        words = f"{request.prompt.splitlines()[0]} {self.spec.suffix}".split()
        prompt_tokens = len(request.prompt.split())
        await request.budget.reserve(input_tokens=prompt_tokens, max_output_tokens=len(words))
        if self.limiter is not None:
            await self.limiter.acquire(prompt_tokens + len(words))
        self._session = self._session or f"echo-{self.loop.name}"
        await emit(send, SessionStarted(self._session))
        await emit(send, Usage(input_tokens=prompt_tokens))
        for word in words:
            await emit(send, TextDelta(word + " "))
        await emit(send, Usage(output_tokens=len(words)))
        await emit(send, Done(output=" ".join(words), session_id=self._session))


def _resume_argv(spec: EchoAgentSpec, session: str | None) -> tuple[str, ...]:
    return (spec.command, "--resume", session) if session else (spec.command,)


KIND = AgentKind(
    name="echo",
    spec=EchoAgentSpec,
    read=_read,
    build=EchoAgent,
    describe=lambda spec: f"{spec.name}(echo {spec.command})",
    chat=True,
    resume_argv=_resume_argv,
    rate_limit_provider="echo",
)
