"""USD per million tokens, per model; loops.toml `[pricing."model-id"]` overrides.

Prices change: keep this table dated and overridable rather than clever.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from supervisor.spec import Price

PRICES_AS_OF = "2026-11"
"""Checked against platform.claude.com/docs/en/about-claude/pricing and the model pages.
`cache_write` is the 5-minute cache write (1h writes cost more: set an override)."""

PRICES: dict[str, Price] = {
    # Fable / Mythos (Mythos: limited availability)
    "claude-fable-5-1": Price(input=10.0, output=50.0, cache_write=12.50, cache_read=0.25),
    "claude-mythos-5-1": Price(input=10.0, output=50.0, cache_write=12.50, cache_read=0.25),
    "claude-fable-5": Price(input=10.0, output=50.0, cache_write=12.50, cache_read=1.0),
    "claude-mythos-5": Price(input=10.0, output=50.0, cache_write=12.50, cache_read=1.0),
    # Opus
    "claude-opus-5-5": Price(input=4.0, output=20.0, cache_write=5.0, cache_read=0.20),
    "claude-opus-5": Price(input=5.0, output=25.0, cache_write=6.25, cache_read=0.50),
    "claude-opus-4-8": Price(input=5.0, output=25.0, cache_write=6.25, cache_read=0.50),
    "claude-opus-4-7": Price(input=5.0, output=25.0, cache_write=6.25, cache_read=0.50),
    "claude-opus-4-6": Price(input=5.0, output=25.0, cache_write=6.25, cache_read=0.50),
    "claude-opus-4-5": Price(input=5.0, output=25.0, cache_write=6.25, cache_read=0.50),
    "claude-opus-4-1": Price(input=15.0, output=75.0, cache_write=18.75, cache_read=1.50),
    "claude-opus-4-0": Price(input=15.0, output=75.0, cache_write=18.75, cache_read=1.50),
    "claude-opus-4": Price(input=15.0, output=75.0, cache_write=18.75, cache_read=1.50),
    # Sonnet (5.5 cache reads cut to $0.10 on 2026-10-07)
    "claude-sonnet-5-5": Price(input=2.0, output=10.0, cache_write=2.50, cache_read=0.10),
    "claude-sonnet-5": Price(input=2.0, output=10.0, cache_write=2.50, cache_read=0.20),
    "claude-sonnet-4-6": Price(input=3.0, output=15.0, cache_write=3.75, cache_read=0.30),
    "claude-sonnet-4-5": Price(input=3.0, output=15.0, cache_write=3.75, cache_read=0.30),
    "claude-sonnet-4-0": Price(input=3.0, output=15.0, cache_write=3.75, cache_read=0.30),
    "claude-sonnet-4": Price(input=3.0, output=15.0, cache_write=3.75, cache_read=0.30),
    "claude-3-7-sonnet": Price(input=3.0, output=15.0, cache_write=3.75, cache_read=0.30),
    # Haiku. 5.5 is tiered: these are its rates for prompts up to 100k tokens; longer
    # prompts cost 5x ($0.50 / $2.50): loops sending long prompts should override.
    "claude-haiku-5-5": Price(input=0.10, output=0.50, cache_write=0.125, cache_read=0.01),
    "claude-haiku-4-5": Price(input=1.0, output=5.0, cache_write=1.25, cache_read=0.10),
    "claude-3-5-haiku": Price(input=0.80, output=4.0, cache_write=1.0, cache_read=0.08),
    "claude-3-haiku": Price(input=0.25, output=1.25, cache_write=0.30, cache_read=0.03),
    # OpenAI, for `kind = "codex"` (gpt-6.1-sol is codex-cli 0.169.0's default model).
    # Rates up to 272K input tokens a request (longer requests: 2x input, 1.5x output;
    # override to be safe); cached input is `cache_read`, cache writes `cache_write`.
    "gpt-6.1-sol": Price(input=2.0, output=10.0, cache_write=2.50, cache_read=0.10),
    "gpt-6-sol": Price(input=2.0, output=10.0, cache_write=2.50, cache_read=0.20),
    # Google, for `kind = "gemini"`: rates for prompts up to 200K tokens (longer prompts
    # cost more: override); cached input is `cache_read` (context-cache storage, billed
    # by the hour, is not a token price). gemini-3.1-pro-preview is where gemini-cli
    # 0.61.0's default ("auto") sends a turn its router deems complex; its router's
    # own classifier model and its flash choices are not priced here.
    "gemini-3.1-pro-preview": Price(input=2.0, output=12.0, cache_write=2.0, cache_read=0.20),
    "gemini-2.5-flash": Price(input=0.30, output=2.50, cache_write=0.30, cache_read=0.03),
}

_SNAPSHOT = re.compile(r"(?:-|@)(?:\d{8}|latest)")
"""What may follow a family id: a dated snapshot (`-20250929`, Vertex `@20250929`)
or `-latest`. Anything else (`claude-opus-4-9`) is a different, unknown model."""


def price_for(model: str | None, overrides: Mapping[str, Price] | None = None) -> Price | None:
    """The price of `model`: an explicit override, else the table (a dated snapshot such
    as `-20250929` matches its family), else None (unknown: USD limits need an override)."""
    if model is None:
        return None
    if overrides and model in overrides:
        return overrides[model]
    if model in PRICES:
        return PRICES[model]
    for family, price in PRICES.items():
        if model.startswith(family) and _SNAPSHOT.fullmatch(model[len(family) :]):
            return price
    return None


def cost_usd(
    price: Price | None,
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_creation_tokens: int = 0,
    cache_read_tokens: int = 0,
) -> float:
    """USD of the given tokens; 0.0 for an unknown price (USD limits then need an
    explicit `[pricing]` entry, which config warns about)."""
    if price is None:
        return 0.0
    return (
        input_tokens * price.input
        + output_tokens * price.output
        + cache_creation_tokens * price.cache_write
        + cache_read_tokens * price.cache_read
    ) / 1_000_000


def worst_usd_per_token(price: Price) -> float:
    """The dearest token of a request: what a reservation must assume."""
    return max(price.input, price.output, price.cache_write) / 1_000_000
