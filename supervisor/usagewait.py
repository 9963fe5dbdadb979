"""Spent subscription windows, shared by every loop of a run.

When an agent reports a usage limit (`agents.usagelimit.UsageLimit`), its loop books
it here under the agent's account; every loop whose agent spends the same account
then waits, state `waiting` with reason "usage limit, resets 20:00", instead of
starting turns that would only be refused, and goes on by itself at the reset. Each
loop adds its own jitter, so that twenty loops do not hit the API in the same second.
A limit whose reset time is unknown is tried again after `UNKNOWN_RESET_S`. The wait
is journalled as the loop's `waiting` state (cause "usage_limit", its wait): a run
resumed after a crash books it again (`restore`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from supervisor.agents.usagelimit import UsageLimit

UNKNOWN_RESET_S = 15 * 60.0
"""How long to wait when the agent did not say when its window resets."""
JITTER_CAP_S = 60.0
JITTER_FRACTION = 0.1
"""Each loop resumes up to this fraction of its wait (at most `JITTER_CAP_S`) late."""


class AccountWaits:
    """Account -> the usage limit it is under until the reset passes."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[float], float] | None = None,
    ) -> None:
        self._clock = clock
        self._jitter = jitter or (lambda most: random.uniform(0.0, most))
        self._limits: dict[str, UsageLimit] = {}

    def block(self, limit: UsageLimit) -> UsageLimit:
        """Book `limit` for its account (a later reset wins); returns what is booked."""
        if limit.resets_at is None:
            limit = UsageLimit(
                resets_at=self._clock() + UNKNOWN_RESET_S,
                window=limit.window,
                message=limit.message,
                account=limit.account,
            )
        known = self._limits.get(limit.account)
        if known is None or (known.resets_at or 0.0) < (limit.resets_at or 0.0):
            self._limits[limit.account] = limit
        return self._limits[limit.account]

    def restore(self, account: str | None, until: float | None) -> bool:
        """Book again a wait the journal recorded (`LoopResume.usage_wait_until`), so a
        resumed run waits out its rest instead of asking to be refused: True if it is
        still on."""
        if account is None or until is None or until <= self._clock():
            return False
        self.block(UsageLimit(resets_at=until, account=account))
        return True

    def blocked(self, account: str | None) -> UsageLimit | None:
        """The limit `account` is under now, None when there is none (or it reset)."""
        if account is None:
            return None
        limit = self._limits.get(account)
        if limit is None:
            return None
        if limit.resets_at is not None and limit.resets_at <= self._clock():
            del self._limits[account]
            return None
        return limit

    def wake_at(self, limit: UsageLimit) -> float:
        """When one loop waiting on `limit` should try again: the reset plus jitter."""
        now = self._clock()
        resets = limit.resets_at if limit.resets_at is not None else now
        wait = max(0.0, resets - now)
        return resets + self._jitter(min(JITTER_CAP_S, wait * JITTER_FRACTION))
