"""USD per million tokens, per model; loops.toml `[pricing."model-id"]` overrides.

Prices change: keep this table dated and overridable rather than clever.
"""

from __future__ import annotations

from collections.abc import Mapping

from .spec import Price

PRICES_AS_OF = "2026-11"

PRICES: dict[str, Price] = {
    "claude-opus-4-5": Price(input=5.0, output=25.0, cache_write=6.25, cache_read=0.50),
    "claude-opus-4-1": Price(input=15.0, output=75.0, cache_write=18.75, cache_read=1.50),
    "claude-opus-4-0": Price(input=15.0, output=75.0, cache_write=18.75, cache_read=1.50),
    "claude-sonnet-4-5": Price(input=3.0, output=15.0, cache_write=3.75, cache_read=0.30),
    "claude-sonnet-4-0": Price(input=3.0, output=15.0, cache_write=3.75, cache_read=0.30),
    "claude-haiku-4-5": Price(input=1.0, output=5.0, cache_write=1.25, cache_read=0.10),
    "claude-3-5-haiku": Price(input=0.80, output=4.0, cache_write=1.0, cache_read=0.08),
}


def price_for(model: str | None, overrides: Mapping[str, Price] | None = None) -> Price | None:
    """The price of `model`: an explicit override, else the table (dated suffixes such as
    `-20250929` match their family), else None (unknown: USD limits need an override)."""
    if model is None:
        return None
    if overrides and model in overrides:
        return overrides[model]
    if model in PRICES:
        return PRICES[model]
    for family, price in PRICES.items():
        if model.startswith(family + "-") or model.startswith(family + "@"):
            return price
    return None


def cost_usd(
    price: Price,
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_creation_tokens: int = 0,
    cache_read_tokens: int = 0,
) -> float:
    return (
        input_tokens * price.input
        + output_tokens * price.output
        + cache_creation_tokens * price.cache_write
        + cache_read_tokens * price.cache_read
    ) / 1_000_000


def worst_usd_per_token(price: Price) -> float:
    """The dearest token of a request: what a reservation must assume."""
    return max(price.input, price.output, price.cache_write) / 1_000_000
