"""`kind = "sim"`: the built-in offline agent (implementation: `supervisor.agents.sim`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias, get_args

from supervisor.agents.base import Agent
from supervisor.agents.kind import AgentContext, AgentKind, TableReader
from supervisor.spec import LoopSpec, empty_map

SimBehavior: TypeAlias = Literal["converge", "stuck", "stall", "fail", "oscillate"]


@dataclass(frozen=True, slots=True)
class SimAgentSpec:
    """The built-in offline agent: deterministic, streams text, writes files."""

    name: str
    kind: Literal["sim"] = "sim"
    seed: int = 0
    rate: float = 200.0
    """Tokens streamed per second (0 = as fast as possible)."""
    behavior: SimBehavior = "converge"
    converge_after: int = 2
    """With behavior=converge: the iteration from which the final files are written."""
    reply_tokens: int = 60
    input_tokens: int | None = None
    """Tokens charged for the prompt; default: estimated from its length."""
    files: Mapping[str, str] = field(default_factory=empty_map)
    """Files written once converged (path relative to the workspace -> content)."""
    draft_files: Mapping[str, str] = field(default_factory=empty_map)
    """Files written before convergence (and forever when stuck)."""
    alt_files: Mapping[str, str] = field(default_factory=empty_map)
    """With behavior=oscillate: written on even iterations instead of draft_files."""
    done_text: str = ""
    """Appended to the reply once converged (e.g. the loop's done_marker)."""
    stall_after: int = 1
    """With behavior=stall/fail: the iteration at which it stalls or fails."""
    usd_per_mtok: float = 3.0


def _read(t: TableReader, name: str) -> SimAgentSpec:
    d = SimAgentSpec(name=name)
    behaviors: tuple[SimBehavior, ...] = get_args(SimBehavior)
    return SimAgentSpec(
        name=name,
        seed=t.integer("seed", d.seed),
        rate=t.number("rate", d.rate, minimum=0),
        behavior=t.choice("behavior", behaviors, d.behavior),  # type: ignore[arg-type]
        converge_after=t.integer("converge_after", d.converge_after, minimum=1),
        reply_tokens=t.integer("reply_tokens", d.reply_tokens, minimum=1),
        input_tokens=t.integer("input_tokens", d.input_tokens, minimum=0),
        files=t.string_map("files"),
        draft_files=t.string_map("draft_files"),
        alt_files=t.string_map("alt_files"),
        done_text=t.string("done_text", d.done_text),
        stall_after=t.integer("stall_after", d.stall_after, minimum=1),
        usd_per_mtok=t.number("usd_per_mtok", d.usd_per_mtok, minimum=0),
    )


def _build(spec: SimAgentSpec, loop: LoopSpec, ctx: AgentContext) -> Agent:
    from supervisor.agents.sim import SimAgent

    return SimAgent(spec, loop)


def _describe(spec: SimAgentSpec) -> str:
    return (
        f"{spec.name}(sim {spec.behavior})" if spec.behavior != "converge" else f"{spec.name}(sim)"
    )


KIND = AgentKind(
    name="sim", spec=SimAgentSpec, read=_read, build=_build, describe=_describe, chat=True
)
