"""`AlertTracker` reads a wait's and a pause's cause, not its wording: a long 429
(cause "rate_limit") is attention then resumed, a countdown or the `pending` between
the wait and the turn is still the wait, a budget pause alerts once however often it
is re-published, the operator's own pause never."""

from __future__ import annotations

from supervisor import events as ev
from supervisor.alerts import AlertTracker


def state(s: ev.LoopState, reason: str = "", cause: ev.StateCause = "") -> ev.LoopStateChanged:
    return ev.LoopStateChanged(loop="a", state=s, reason=reason, cause=cause)


def kinds(*events: ev.LoopStateChanged) -> list[tuple[str, str]]:
    tracker = AlertTracker()
    return [(a.kind, a.reason) for e in events if (a := tracker.observe(e)) is not None]


def test_a_long_rate_limit_wait_is_attention_then_resumed() -> None:
    wait = "rate limited by the API: retry in 10m"
    assert kinds(
        state("running", "agent turn 1/5"),
        state("waiting", wait, "rate_limit"),
        state("waiting", wait, "rate_limit"),  # a countdown
        state("pending", "resuming"),
        state("waiting", "waiting for a slot"),
        state("running", "agent turn 1/5"),
        state("running", "agent turn 2/5"),
    ) == [("attention", wait), ("resumed", f"agent turn 1/5 (after {wait})")]


def test_a_short_wait_without_a_cause_is_no_news() -> None:
    assert kinds(state("waiting", "rate limited: retry in 2s"), state("running")) == []


def test_a_budget_pause_alerts_once_and_the_operators_pause_never() -> None:
    budget = "budget: loop 'a' tokens budget used up (40 of 40 tokens); raise it to go on"
    assert kinds(
        state("paused", budget, "budget"),
        state("paused", budget, "budget"),
        state("pending", "resumed by the operator"),
        state("running"),
        state("paused", "paused by the operator"),
    ) == [("attention", budget)]
