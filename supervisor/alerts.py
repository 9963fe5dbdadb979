"""Which events a person who is not watching should hear about: one `Alert` each.

Shared vocabulary of the clients that tell someone: the notifier (`supervisor.notify`:
desktop, webhook, command) and the console's bell. Both follow the bus, so both see
the same alerts; neither is called by a loop.

An alert is:
- `attention`: a loop needs a person or waits without one: `stuck` (a detector
  paused it), `paused` by anything but the operator (cause "budget": raise it; a
  failed landing), or `waiting` with cause "usage_limit" or "rate_limit" (the
  account's window, a long 429); once per stretch in that state;
- `resumed`: a loop that waited on a usage or rate limit runs again (the states
  between, `pending` and a slot's `waiting`, are still the wait's);
- `failed`, `exhausted`: a loop ended so;
- `budget`: a ledger crossed a warning threshold (`BudgetWarning`);
- `finished`: the run's summary (`RunFinished`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from supervisor import events as ev

AlertKind: TypeAlias = Literal[
    "attention", "resumed", "failed", "exhausted", "budget", "finished", "test"
]
OPERATOR_PAUSE = "paused by the operator"
"""The reason of a pause somebody asked for: nobody needs to be told about it."""
WAIT_CAUSES: frozenset[str] = frozenset({"usage_limit", "rate_limit"})
"""The causes of a `waiting` that is news: nobody knows when it ends but the clock."""
TITLES: dict[str, str] = {
    "attention": "needs attention",
    "resumed": "resumed",
    "failed": "failed",
    "exhausted": "budget exhausted",
    "budget": "budget warning",
    "finished": "run finished",
    "test": "test message",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    kind: AlertKind
    loop: str | None = None
    state: str = ""
    reason: str = ""
    iteration: int = 0
    ts: float = field(default_factory=time.time)
    summary: ev.RunFinished | None = None
    """The run's summary (`finished`)."""

    @property
    def subscribed_as(self) -> str:
        """The `[notify] events` name that selects it (`resumed` goes with `attention`)."""
        return "attention" if self.kind == "resumed" else self.kind

    def line(self) -> str:
        """One line for a person: `fizz: needs attention: stuck: same failure 3 times`."""
        where = f"{self.loop}: " if self.loop else ""
        reason = f": {self.reason}" if self.reason else ""
        return f"{where}{TITLES[self.kind]}{reason}"


def _classify(event: ev.LoopStateChanged) -> tuple[AlertKind | None, str]:
    """The alert a state asks for and the mark that remembers it ("" for none)."""
    if event.state == "stuck":
        return "attention", "stuck"
    if event.state == "paused" and (event.cause == "budget" or event.reason != OPERATOR_PAUSE):
        return "attention", "paused"
    if event.state == "waiting" and event.cause in WAIT_CAUSES:
        return "attention", event.cause
    if event.state in ("failed", "exhausted"):
        return event.state, event.state
    return None, ""


class AlertTracker:
    """Turns events into alerts, remembering each loop's last one so that a state
    re-published (a countdown, a reason that changed) does not alert twice."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}
        """loop -> the mark of the state it last alerted for ("" once it moved on)."""
        self._waited: dict[str, str] = {}
        """loop -> the reason of the usage or rate limit wait it is in."""

    def observe(self, event: ev.Event) -> Alert | None:
        if isinstance(event, ev.LoopStateChanged):
            return self._state(event)
        if isinstance(event, ev.BudgetWarning):
            loop = None if event.scope == "global" else event.scope
            return Alert(kind="budget", loop=loop, reason=event.message, ts=event.ts)
        if isinstance(event, ev.RunFinished):
            return Alert(kind="finished", reason=event.reason, ts=event.ts, summary=event)
        return None

    def _state(self, event: ev.LoopStateChanged) -> Alert | None:
        previous = self._last.get(event.loop, "")
        kind, mark = _classify(event)
        reason = event.reason
        if kind is None and previous in WAIT_CAUSES:
            if event.state in ("waiting", "pending"):
                return None  # the wait goes on (a countdown, a slot): not over yet
            if event.state == "running":
                kind = "resumed"
                reason = f"{event.reason} (after {self._waited.pop(event.loop, 'a wait')})"
        if mark in WAIT_CAUSES:
            self._waited[event.loop] = event.reason
        self._last[event.loop] = mark
        if kind is None or (mark and mark == previous):
            return None
        return Alert(
            kind=kind,
            loop=event.loop,
            state=event.state,
            reason=reason,
            iteration=event.iteration,
            ts=event.ts,
        )
