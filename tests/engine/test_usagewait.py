"""`usagewait.AccountWaits`: one booking per account, the later reset wins, jitter."""

from __future__ import annotations

from supervisor.agents.usagelimit import UsageLimit
from supervisor.usagewait import JITTER_CAP_S, UNKNOWN_RESET_S, AccountWaits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_account_is_blocked_until_its_reset_and_others_are_not() -> None:
    clock = Clock()
    waits = AccountWaits(clock, jitter=lambda most: most)
    waits.block(UsageLimit(resets_at=1100.0, account="cc:1"))
    assert waits.blocked("cc:1") is not None
    assert waits.blocked("cc:2") is None
    assert waits.blocked(None) is None
    limit = waits.blocked("cc:1")
    assert limit is not None
    assert waits.wake_at(limit) == 1100.0 + 10.0  # a tenth of the 100 s wait
    clock.now = 1100.0
    assert waits.blocked("cc:1") is None


def test_the_later_reset_wins_and_jitter_is_capped() -> None:
    clock = Clock()
    waits = AccountWaits(clock, jitter=lambda most: most)
    waits.block(UsageLimit(resets_at=5000.0, account="a"))
    waits.block(UsageLimit(resets_at=2000.0, account="a"))
    limit = waits.blocked("a")
    assert limit is not None
    assert limit.resets_at == 5000.0
    assert waits.wake_at(limit) == 5000.0 + JITTER_CAP_S


def test_an_unknown_reset_is_tried_again_later() -> None:
    clock = Clock()
    waits = AccountWaits(clock)
    booked = waits.block(UsageLimit(resets_at=None, account="a"))
    assert booked.resets_at == 1000.0 + UNKNOWN_RESET_S
