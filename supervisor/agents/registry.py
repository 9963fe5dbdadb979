"""Every agent kind by its `kind = "..."` name: the one list config, `build_agent`,
step-in and the rate limiters read.

Adding a kind: one module in `supervisor/agents/kinds/` exporting `KIND` (its spec,
reader, factory and abilities: `supervisor.agents.kind.AgentKind`), one line below,
and its tests. Tests may add a kind for their own run with
`monkeypatch.setitem(KINDS, kind.name, kind)`.
"""

from __future__ import annotations

from typing import Any

from supervisor.agents.base import Agent
from supervisor.agents.kind import AgentContext, AgentKind
from supervisor.agents.kinds import anthropic, claude_code, codex, command, gemini, sim
from supervisor.spec import AgentSpec, LoopSpec

KINDS: dict[str, AgentKind[Any]] = {
    kind.name: kind
    for kind in (
        sim.KIND,
        command.KIND,
        anthropic.KIND,
        claude_code.KIND,
        codex.KIND,
        gemini.KIND,
    )
}
"""In the order `loopvisor check` lists them ("kind is one of ...")."""


def kind_of(spec: AgentSpec) -> AgentKind[Any]:
    """The kind of a spec that config read (TypeError for anything else)."""
    kind = KINDS.get(spec.kind)
    if kind is None or not isinstance(spec, kind.spec):
        raise TypeError(f"unknown agent spec {spec!r}")
    return kind


def build_agent(spec: AgentSpec, loop: LoopSpec, ctx: AgentContext) -> Agent:
    """The agent of `loop` (its implementation imported now, not before)."""
    return kind_of(spec).build(spec, loop, ctx)


def rate_limit_providers() -> frozenset[str]:
    """The tables `[supervisor.rate_limits]` may hold: one per provider a kind uses."""
    return frozenset(k.rate_limit_provider for k in KINDS.values() if k.rate_limit_provider)
