"""Hierarchical budget ledgers: reserve before a turn, settle after it.

A loop's ledger has the global ledger as parent; a reservation is taken from the
whole chain at once (there is no await between the checks and the booking, so on
one event loop it is atomic). A turn may never be granted more than every ledger
in the chain has left: `available = limit - spent - reserved`. The API path clamps
`max_tokens` to the grant, so it cannot overshoot; CLI agents that cannot be
clamped are charged as they report and killed when they cross (the overshoot is
recorded and bounded by one message).

Dimensions: tokens and USD (reserved, then settled), CPU seconds (charged as
measured), wall time (a deadline the runtime enforces). Iterations and retries
are counted by the loop itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import anyio

from supervisor.spec import Limits


@dataclass(frozen=True, slots=True)
class Charge:
    """What a turn actually consumed."""

    tokens: int = 0
    usd: float = 0.0
    cpu_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Shortfall:
    """Why a reservation was refused, and whether waiting could help."""

    scope: str
    dimension: str
    can_wait: bool
    """True when reservations held by other turns may still be released."""

    @property
    def reason(self) -> str:
        verb = "reserved by running turns" if self.can_wait else "used up"
        where = "global" if self.scope == "global" else f"loop {self.scope!r}"
        return f"{where} {self.dimension} budget {verb}"


@dataclass(slots=True)
class Reservation:
    """Tokens and USD set aside on every ledger of a chain until settled."""

    ledgers: tuple[Ledger, ...]
    tokens: int
    usd: float
    settled: bool = False


@dataclass(frozen=True, slots=True)
class LedgerStatistics:
    name: str
    limits: Limits
    tokens_spent: int
    tokens_reserved: int
    usd_spent: float
    usd_reserved: float
    cpu_spent: float
    overshoot_tokens: int
    overshoot_usd: float


@dataclass(slots=True)
class Ledger:
    """Spending of one scope ("global" or a loop) against its hard limits."""

    name: str
    limits: Limits
    parent: Ledger | None = None
    tokens_spent: int = 0
    usd_spent: float = 0.0
    cpu_spent: float = 0.0
    tokens_reserved: int = 0
    usd_reserved: float = 0.0
    overshoot_tokens: int = 0
    overshoot_usd: float = 0.0
    pause_when_exhausted: bool = False
    """`on_exhausted = "pause"`: its loops wait for a raised limit instead of ending."""
    open_reservations: int = 0
    """Reservations not yet released; with none open, nothing is reserved (no float residue)."""
    _changed: anyio.Event | None = field(default=None, repr=False)

    # -- reading -------------------------------------------------------------
    def chain(self) -> tuple[Ledger, ...]:
        ledgers: list[Ledger] = []
        node: Ledger | None = self
        while node is not None:
            ledgers.append(node)
            node = node.parent
        return tuple(ledgers)

    def tokens_left(self) -> int | None:
        """Tokens this ledger alone could still grant (None: unlimited)."""
        if self.limits.tokens is None:
            return None
        return max(0, self.limits.tokens - self.tokens_spent - self.tokens_reserved)

    def usd_left(self) -> float | None:
        if self.limits.usd is None:
            return None
        return max(0.0, self.limits.usd - self.usd_spent - self.usd_reserved)

    def cpu_left(self) -> float | None:
        """CPU seconds left on this ledger and every one above it (None: unlimited)."""
        lefts = [
            max(0.0, node.limits.cpu - node.cpu_spent)
            for node in self.chain()
            if node.limits.cpu is not None
        ]
        return min(lefts) if lefts else None

    def exhausted_dimension(self) -> str | None:
        """A dimension whose spending (not reservations) reached the limit, if any."""
        lim = self.limits
        if lim.tokens is not None and self.tokens_spent >= lim.tokens:
            return "tokens"
        if lim.usd is not None and self.usd_spent >= lim.usd - 1e-12:
            return "usd"
        if lim.cpu is not None and self.cpu_spent >= lim.cpu:
            return "cpu"
        return None

    def statistics(self) -> LedgerStatistics:
        return LedgerStatistics(
            name=self.name,
            limits=self.limits,
            tokens_spent=self.tokens_spent,
            tokens_reserved=self.tokens_reserved,
            usd_spent=self.usd_spent,
            usd_reserved=self.usd_reserved,
            cpu_spent=self.cpu_spent,
            overshoot_tokens=self.overshoot_tokens,
            overshoot_usd=self.overshoot_usd,
        )

    # -- reserving -----------------------------------------------------------
    def try_reserve(
        self, *, minimum: int, wanted: int, usd_per_token: float = 0.0
    ) -> Reservation | Shortfall:
        """Grant between `minimum` and `wanted` tokens from every ledger of the chain.

        `usd_per_token` is the worst-case price of one token of this turn; the USD
        reservation is the granted tokens at that price. With `wanted == 0`
        (usage unknown, e.g. a plain CLI) nothing is set aside, but a spent-out
        ledger still refuses.
        """
        grant = wanted
        for ledger in self.chain():
            dim = ledger.exhausted_dimension()
            if dim is not None:
                return Shortfall(ledger.name, dim, can_wait=False)
            left = ledger.tokens_left()
            if left is not None and left < grant:
                grant = left
                if grant < minimum:
                    return Shortfall(ledger.name, "tokens", can_wait=ledger.tokens_reserved > 0)
            usd_left = ledger.usd_left()
            if usd_left is not None and usd_per_token > 0:
                affordable = math.floor(usd_left / usd_per_token)
                if affordable < grant:
                    grant = affordable
                    if grant < minimum:
                        return Shortfall(ledger.name, "usd", can_wait=ledger.usd_reserved > 0)
        grant = max(grant, 0)
        usd = grant * usd_per_token
        chain = self.chain()
        for ledger in chain:
            ledger.tokens_reserved += grant
            ledger.usd_reserved += usd
            ledger.open_reservations += 1
        return Reservation(chain, grant, usd)

    def consume(self, reservation: Reservation, actual: Charge) -> None:
        """Book consumption, drawing on the reservation first; any excess is charged
        straight to the chain (a CLI agent that overshot: recorded as overshoot)."""
        if reservation.settled:
            raise RuntimeError("reservation already released")
        from_res_tokens = max(0, min(actual.tokens, reservation.tokens))
        from_res_usd = max(0.0, min(actual.usd, reservation.usd))
        reservation.tokens -= from_res_tokens
        reservation.usd -= from_res_usd
        for ledger in reservation.ledgers:
            ledger.tokens_reserved -= from_res_tokens
            ledger.usd_reserved = max(0.0, ledger.usd_reserved - from_res_usd)
        self.charge(actual)

    def release(self, reservation: Reservation) -> None:
        """Give back what a reservation did not use. Idempotent."""
        if reservation.settled:
            return
        reservation.settled = True
        for ledger in reservation.ledgers:
            ledger.tokens_reserved -= reservation.tokens
            ledger.usd_reserved = max(0.0, ledger.usd_reserved - reservation.usd)
            ledger.open_reservations -= 1
            if ledger.open_reservations == 0:
                ledger.usd_reserved = 0.0  # float residue would read as "wait, it frees up"
            ledger._notify()
        reservation.tokens = 0
        reservation.usd = 0.0

    def settle(self, reservation: Reservation, actual: Charge) -> None:
        """Consume what a turn used and release the rest, in one step."""
        self.consume(reservation, actual)
        self.release(reservation)

    def charge(self, actual: Charge) -> None:
        """Book consumption on the whole chain (CPU time, CLI usage as reported)."""
        for ledger in self.chain():
            ledger.tokens_spent += actual.tokens
            ledger.usd_spent += actual.usd
            ledger.cpu_spent += actual.cpu_s
            lim = ledger.limits
            if lim.tokens is not None and ledger.tokens_spent > lim.tokens:
                ledger.overshoot_tokens = ledger.tokens_spent - lim.tokens
            if lim.usd is not None and ledger.usd_spent > lim.usd:
                ledger.overshoot_usd = ledger.usd_spent - lim.usd
            ledger._notify()

    def charge_cpu(self, seconds: float) -> None:
        if seconds > 0:
            self.charge(Charge(cpu_s=seconds))

    def crossed(self) -> Shortfall | None:
        """The first ledger of the chain whose spending reached its limit, if any."""
        for ledger in self.chain():
            dim = ledger.exhausted_dimension()
            if dim is not None:
                return Shortfall(ledger.name, dim, can_wait=False)
        return None

    # -- waiting -------------------------------------------------------------
    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_changed(self) -> None:
        """Sleep until any ledger of the chain books a charge or releases a reservation."""
        events: list[anyio.Event] = []
        for ledger in self.chain():
            if ledger._changed is None:
                ledger._changed = anyio.Event()
            events.append(ledger._changed)
        async with anyio.create_task_group() as tg:

            async def wait_one(ev: anyio.Event) -> None:
                await ev.wait()
                tg.cancel_scope.cancel()

            for ev in events:
                tg.start_soon(wait_one, ev)
