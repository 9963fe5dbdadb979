"""The ground every event stands on: loop states, iteration outcomes, and the `Event`
and `LoopEvent` bases (a frozen dataclass with a stable `type` and a JSON-ready
`to_dict()`). `events` re-exports all of it; import from there."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias

LoopState: TypeAlias = Literal[
    "pending",
    "running",
    "checking",
    "waiting",
    "pausing",
    "paused",
    "stuck",
    "scheduled",
    "succeeded",
    "failed",
    "exhausted",
    "stopped",
]
END_STATES: frozenset[str] = frozenset({"succeeded", "failed", "exhausted", "stopped"})
"""States a loop never leaves on its own (restart starts it anew)."""
ATTENTION_STATES: frozenset[str] = frozenset({"paused", "stuck"})
"""States in which a loop waits for a person."""

StateCause: TypeAlias = Literal["", "usage_limit", "rate_limit", "budget"]

IterationOutcome: TypeAlias = Literal[
    "succeeded",
    "continue",
    "failed",
    "exhausted",
    "stuck",
    "stopped",
    "error",
    "interrupted",
]


def _now() -> float:
    return time.time()


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event: wall-clock timestamp (epoch seconds)."""

    type: ClassVar[str] = "event"
    ts: float = field(default_factory=_now)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"type": self.type, **data}


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopEvent(Event):
    """An event that concerns one loop."""

    loop: str
