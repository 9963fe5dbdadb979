"""Token counts in the four dimensions the ledger keeps apart, and how APIs report them.

The Messages API (SSE, SDK objects) and Claude Code's stream-json both report
*cumulative* usage per message; agents turn it into the deltas the loop charges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from supervisor.agents.base import Usage

_API_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


@dataclass(frozen=True, slots=True)
class Tokens:
    """Token counts in the four dimensions the ledger keeps apart."""

    input: int = 0
    output: int = 0
    cache_creation: int = 0
    cache_read: int = 0

    @classmethod
    def from_api(cls, usage: Any) -> Tokens:
        """From a Messages API `usage` object (snake_case fields; absent = 0)."""
        if not isinstance(usage, Mapping):
            return cls()
        return cls(
            positive_int(usage.get("input_tokens")),
            positive_int(usage.get("output_tokens")),
            positive_int(usage.get("cache_creation_input_tokens")),
            positive_int(usage.get("cache_read_input_tokens")),
        )

    @classmethod
    def from_model_usage(cls, usage: Any) -> Tokens:
        """From one entry of the result's `modelUsage` (camelCase fields)."""
        if not isinstance(usage, Mapping):
            return cls()
        return cls(
            positive_int(usage.get("inputTokens")),
            positive_int(usage.get("outputTokens")),
            positive_int(usage.get("cacheCreationInputTokens")),
            positive_int(usage.get("cacheReadInputTokens")),
        )

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(
            self.input + other.input,
            self.output + other.output,
            self.cache_creation + other.cache_creation,
            self.cache_read + other.cache_read,
        )

    def growth_to(self, other: Tokens) -> Tokens:
        """What `other` has beyond `self`, per field, never negative."""
        return Tokens(
            max(0, other.input - self.input),
            max(0, other.output - self.output),
            max(0, other.cache_creation - self.cache_creation),
            max(0, other.cache_read - self.cache_read),
        )

    def maximum(self, other: Tokens) -> Tokens:
        return self + self.growth_to(other)

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_creation + self.cache_read

    @classmethod
    def from_sdk(cls, usage: Any) -> Tokens:
        """From an `anthropic` SDK usage object (attributes; None or absent = 0)."""
        return cls(*(positive_int(getattr(usage, name, None)) for name in _API_FIELDS))

    def as_usage(self, *, model: str | None = None, usd: float | None = None) -> Usage:
        return Usage(
            input_tokens=self.input,
            output_tokens=self.output,
            cache_creation_tokens=self.cache_creation,
            cache_read_tokens=self.cache_read,
            usd=usd,
            model=model,
        )


def positive_int(value: Any) -> int:
    """A JSON count: a positive int, anything else (bool, None, float, negative) 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
