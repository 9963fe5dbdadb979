"""One shared rate limiter per provider, so that many loops do not stampede into 429s.

Each limiter holds two token buckets (requests and tokens per minute, from
`[supervisor.rate_limits]`), refilled continuously like the API's own limiter. A
bucket holds at most `burst` of a minute's allowance, so 50 loops starting at once
are paced instead of firing together. Waiters are served strictly first come,
first served (anyio's Lock is FIFO), so a big request is not starved by small ones.

The limiter also learns from the provider: `anthropic-ratelimit-*-remaining` lowers
a bucket to what the server says is left (other processes may share the key),
`-limit` adopts a limit that was not configured, and `retry-after` (a 429) holds
every waiter until it has passed (`penalize`).
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import anyio

from supervisor.spec import RateLimit

DEFAULT_PERIOD_S = 60.0
DEFAULT_BURST = 0.1
"""Fraction of a period's allowance a bucket can hold (sent at once after a pause)."""

_HEADER = "anthropic-ratelimit-"
_TOKEN_KINDS = ("tokens", "input-tokens", "output-tokens")


@dataclass(frozen=True, slots=True)
class RateLimiterStatistics:
    name: str
    requests_per_minute: float | None
    tokens_per_minute: float | None
    requests: int
    """Requests granted so far."""
    tokens: int
    """Tokens granted so far (after refunds)."""
    waits: int
    """Grants that had to wait."""
    waited_s: float
    max_wait_s: float
    waiting: int
    """Acquirers queued right now."""
    penalties: int
    blocked_for_s: float
    """Seconds left of the current retry-after penalty."""


class _Bucket:
    """A continuously refilled bucket; `limit` per `period`, None = unlimited."""

    def __init__(self, limit: float | None, *, period: float, burst: float, now: float) -> None:
        self.period = period
        self.burst = burst
        self.limit: float | None = None
        self.capacity = math.inf
        self.level = math.inf
        self.updated = now
        self.set_limit(limit, now)

    def set_limit(self, limit: float | None, now: float) -> None:
        self.refill(now)
        self.limit = limit
        if limit is None:
            self.capacity = self.level = math.inf
            return
        self.capacity = max(1.0, limit * self.burst)
        self.level = min(self.level, self.capacity)

    @property
    def rate(self) -> float:
        return math.inf if self.limit is None else self.limit / self.period

    def refill(self, now: float) -> None:
        if self.limit is not None and now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until `amount` may be taken (an amount above capacity waits for a
        full bucket and then runs it into debt)."""
        self.refill(now)
        need = min(amount, self.capacity)
        if self.level >= need:
            return 0.0
        return (need - self.level) / self.rate

    def take(self, amount: float) -> None:
        if self.limit is not None:
            self.level -= amount

    def give(self, amount: float, now: float) -> None:
        self.refill(now)
        if self.limit is not None:
            self.level = min(self.capacity, self.level + amount)

    def lower_to(self, remaining: float, now: float) -> None:
        self.refill(now)
        if remaining < self.level:
            self.level = remaining


class RateLimiter:
    """Requests- and tokens-per-minute limiter shared by every loop of one provider."""

    def __init__(
        self,
        name: str,
        limit: RateLimit | None = None,
        *,
        period: float = DEFAULT_PERIOD_S,
        burst: float = DEFAULT_BURST,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """`period` is the "minute" that configured and advertised limits refer to (60 s;
        tests shorten it); `clock` is monotonic seconds, `wall_clock` reads reset stamps."""
        limit = limit or RateLimit()
        self.name = name
        self.period = period
        self._clock = clock
        self._wall = wall_clock
        now = clock()
        self._configured = limit
        self._requests = _Bucket(limit.requests_per_minute, period=period, burst=burst, now=now)
        self._tokens = _Bucket(limit.tokens_per_minute, period=period, burst=burst, now=now)
        self._blocked_until = now
        self._lock: anyio.Lock | None = None
        self._changed: anyio.Event | None = None
        self._queued_tokens = 0
        self._waiting = 0
        self._granted_requests = 0
        self._granted_tokens = 0
        self._waits = 0
        self._waited_s = 0.0
        self._max_wait_s = 0.0
        self._penalties = 0

    # -- limits ----------------------------------------------------------------
    @property
    def requests_per_minute(self) -> float | None:
        return self._requests.limit

    @property
    def tokens_per_minute(self) -> float | None:
        return self._tokens.limit

    def describe(self) -> str:
        """A short reason for a wait, e.g. "50 rpm, 40000 tpm"."""
        parts = []
        if (rpm := self.requests_per_minute) is not None:
            parts.append(f"{rpm:g} rpm")
        if (tpm := self.tokens_per_minute) is not None:
            parts.append(f"{tpm:g} tpm")
        if self.blocked_for() > 0:
            parts.append("retry-after")
        return ", ".join(parts) or "provider limit"

    # -- acquiring -------------------------------------------------------------
    def blocked_for(self) -> float:
        return max(0.0, self._blocked_until - self._clock())

    def estimate_wait(self, tokens: int = 0) -> float:
        """Roughly how long `acquire(tokens)` would wait now, counting those queued ahead."""
        now = self._clock()
        req = self._requests.wait_for(1 + self._waiting, now)
        tok = self._tokens.wait_for(tokens + self._queued_tokens, now) if tokens else 0.0
        return max(self.blocked_for(), req, tok)

    async def acquire(self, tokens: int = 0) -> float:
        """Wait (FIFO) until one request of `tokens` tokens may be sent; returns seconds waited."""
        if self._lock is None:
            self._lock = anyio.Lock()
        tokens = max(0, tokens)
        if (
            self._requests.limit is None
            and self._tokens.limit is None
            and self._waiting == 0
            and self.blocked_for() == 0
        ):
            self._granted_requests += 1
            self._granted_tokens += tokens
            return 0.0
        started = self._clock()
        self._waiting += 1
        self._queued_tokens += tokens
        queued = True
        try:
            async with self._lock:
                self._waiting -= 1
                self._queued_tokens -= tokens
                queued = False
                while True:
                    now = self._clock()
                    wait = max(
                        self._blocked_until - now,
                        self._requests.wait_for(1, now),
                        self._tokens.wait_for(tokens, now),
                    )
                    if wait <= 0:
                        break
                    if self._changed is None:
                        self._changed = anyio.Event()
                    with anyio.move_on_after(wait):
                        await self._changed.wait()
                self._requests.take(1)
                self._tokens.take(tokens)
        finally:
            if queued:  # cancelled while queued for the lock
                self._waiting -= 1
                self._queued_tokens -= tokens
        waited = max(0.0, self._clock() - started)
        self._granted_requests += 1
        self._granted_tokens += tokens
        if waited < 0.001:
            waited = 0.0  # passing the lock's checkpoint is not a wait
        else:
            self._waits += 1
            self._waited_s += waited
            self._max_wait_s = max(self._max_wait_s, waited)
        return waited

    def refund(self, tokens: int) -> None:
        """Give back tokens acquired but not used (acquire took the worst case)."""
        if tokens > 0:
            self._tokens.give(tokens, self._clock())
            self._granted_tokens -= tokens
            self._notify()

    def penalize(self, seconds: float) -> None:
        """Nobody sends before `seconds` from now (a 429's retry-after)."""
        if seconds <= 0:
            return
        until = self._clock() + seconds
        if until > self._blocked_until:
            self._blocked_until = until
            self._penalties += 1
            self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    # -- learning --------------------------------------------------------------
    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Learn from a response's `anthropic-ratelimit-*` and `retry-after` headers."""
        h = {k.lower(): v for k, v in headers.items()}
        now = self._clock()
        self._learn(self._requests, "requests", self._configured.requests_per_minute, h, now)
        token_kinds = [k for k in _TOKEN_KINDS if f"{_HEADER}{k}-remaining" in h]
        for kind in token_kinds:
            self._learn(self._tokens, kind, self._configured.tokens_per_minute, h, now)
        retry = retry_after_seconds(h)
        if retry is not None:
            self.penalize(retry)

    def _learn(
        self,
        bucket: _Bucket,
        kind: str,
        configured: int | None,
        h: Mapping[str, str],
        now: float,
    ) -> None:
        limit = _number(h.get(f"{_HEADER}{kind}-limit"))
        if limit is not None and limit > 0:
            wanted = limit if configured is None else min(configured, limit)
            if bucket.limit is None or wanted < bucket.limit:
                bucket.set_limit(wanted, now)
        remaining = _number(h.get(f"{_HEADER}{kind}-remaining"))
        if remaining is None:
            return
        if bucket.limit is not None:
            bucket.lower_to(remaining, now)
        elif remaining <= 0:
            reset = _reset_in(h.get(f"{_HEADER}{kind}-reset"), self._wall())
            if reset is not None:
                self.penalize(reset)

    # -- reporting -------------------------------------------------------------
    def statistics(self) -> RateLimiterStatistics:
        return RateLimiterStatistics(
            name=self.name,
            requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
            requests=self._granted_requests,
            tokens=self._granted_tokens,
            waits=self._waits,
            waited_s=self._waited_s,
            max_wait_s=self._max_wait_s,
            waiting=self._waiting,
            penalties=self._penalties,
            blocked_for_s=self.blocked_for(),
        )


class RateLimiterRegistry:
    """The run's limiters, one per provider name (created on first use)."""

    def __init__(
        self,
        rate_limits: Mapping[str, RateLimit] | None = None,
        *,
        period: float = DEFAULT_PERIOD_S,
        burst: float = DEFAULT_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = dict(rate_limits or {})
        self._period = period
        self._burst = burst
        self._clock = clock
        self._limiters: dict[str, RateLimiter] = {}

    def for_provider(self, name: str) -> RateLimiter:
        limiter = self._limiters.get(name)
        if limiter is None:
            limiter = RateLimiter(
                name,
                self._limits.get(name),
                period=self._period,
                burst=self._burst,
                clock=self._clock,
            )
            self._limiters[name] = limiter
        return limiter

    def statistics(self) -> dict[str, RateLimiterStatistics]:
        return {name: lim.statistics() for name, lim in self._limiters.items()}


# -- header parsing ------------------------------------------------------------
def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms` (preferred) or `retry-after` in seconds, as the SDK reads them."""
    h = {k.lower(): v for k, v in headers.items()}
    ms = _number(h.get("retry-after-ms"))
    if ms is not None:
        return max(0.0, ms / 1000.0)
    seconds = _number(h.get("retry-after"))
    if seconds is not None:
        return max(0.0, seconds)
    raw = h.get("retry-after")
    if raw:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is not None:
            return max(0.0, email.utils.mktime_tz(parsed) - time.time())
    return None


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _reset_in(raw: str | None, wall_now: float) -> float | None:
    """Seconds until an RFC 3339 reset stamp."""
    if not raw:
        return None
    try:
        stamp = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, stamp.timestamp() - wall_now)
