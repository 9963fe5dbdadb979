"""The loop's budget gate handed to an agent for each turn (`agents.base.TurnBudget`).

Before every model request the agent calls `reserve`; the grant is clamped to what
the loop and global ledgers have left, so API output can never overshoot. Usage the
agent reports is drawn from the open reservation first; anything beyond it (a CLI
agent that could not be clamped) is charged straight away so that the loop sees the
crossing at once and can kill the turn.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import anyio.lowlevel

from supervisor.agents.base import BudgetExhausted, Usage
from supervisor.agents.pricing import cost_usd, price_for, worst_usd_per_token
from supervisor.budget import Charge, Ledger, Reservation
from supervisor.spec import Price


class LedgerTurnBudget:
    """Reserve/consume/release against one loop ledger (and, through it, the global one)."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        pricing: Mapping[str, Price] | None = None,
        default_model: str | None = None,
        on_wait: Callable[[str], None] | None = None,
        on_resume: Callable[[], None] | None = None,
        on_booking: Callable[[str, int, float], None] | None = None,
        settle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.ledger = ledger
        self.pricing = pricing or {}
        self.default_model = default_model
        self._on_wait = on_wait
        self._on_resume = on_resume
        self._on_booking = on_booking
        """Told ("reserved" | "released", tokens, usd): journalled for crash recovery."""
        self._settle = settle
        """Awaited first by `reserve`: until the turn has booked the usage the agent
        reported so far, which the reservation must not miss."""
        self._reservation: Reservation | None = None

    def price(self, model: str | None) -> Price | None:
        return price_for(model or self.default_model, self.pricing)

    async def reserve(
        self,
        *,
        input_tokens: int,
        max_output_tokens: int,
        model: str | None = None,
        minimum_output_tokens: int = 1,
        usd_per_token: float | None = None,
    ) -> int:
        if self._settle is not None:
            await self._settle()
        self.release()
        price = self.price(model)
        per_token = usd_per_token
        if per_token is None:
            per_token = worst_usd_per_token(price) if price is not None else 0.0
        waited = False
        while True:
            result = self.ledger.try_reserve(
                minimum=input_tokens + minimum_output_tokens,
                wanted=input_tokens + max_output_tokens,
                usd_per_token=per_token,
            )
            if isinstance(result, Reservation):
                self._reservation = result
                if self._on_booking is not None:
                    self._on_booking("reserved", result.tokens, result.usd)
                    # The journal commits the reservation in a callback it scheduled
                    # just now (`Journal._write_ahead`): it runs before we go on.
                    await anyio.lowlevel.checkpoint()
                if waited and self._on_resume is not None:
                    self._on_resume()
                return max(0, result.tokens - input_tokens)
            if not result.can_wait:
                raise BudgetExhausted(result.reason)
            if self._on_wait is not None:
                self._on_wait(result.reason)
            waited = True
            await self.ledger.wait_changed()

    def charge(self, usage: Usage) -> Charge:
        """Book one usage delta; returns what was charged (USD priced if not given)."""
        usd = usage.usd
        if usd is None:
            usd = cost_usd(
                self.price(usage.model),
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_creation_tokens=usage.cache_creation_tokens,
                cache_read_tokens=usage.cache_read_tokens,
            )
        charge = Charge(tokens=usage.tokens, usd=usd, cpu_s=usage.cpu_s)
        if self._reservation is not None and not self._reservation.settled:
            self.ledger.consume(self._reservation, charge)
        else:
            self.ledger.charge(charge)
        return charge

    def release(self) -> None:
        if self._reservation is not None:
            tokens, usd = self._reservation.tokens, self._reservation.usd
            self.ledger.release(self._reservation)
            self._reservation = None
            if self._on_booking is not None:
                self._on_booking("released", tokens, usd)

    def remaining_tokens(self) -> int | None:
        lefts = [left for led in self.ledger.chain() if (left := led.tokens_left()) is not None]
        return min(lefts) if lefts else None
