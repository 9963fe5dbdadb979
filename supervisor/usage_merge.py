"""A turn's usage reports, published merged (issue 12: events are most of a turn's cost).

An agent reports usage often: the sim every 16 tokens, an API agent at each message
event. The turn charges every report against the ledgers as it comes (the budget
crossing check stays exact: `turn.AgentTurn._relay`), but each published
`UsageCharged` is built, redacted, journalled (an event row and a ledger row),
encoded and printed, and five of a sim iteration's 13 events were usage reports.
What is published is their sum: one event for the reports charged within
`USAGE_INTERVAL_S`, published when the window closes, and at once before anything
that must come after it in the journal (a reservation or its release, a tool call,
the turn's end) or when a report crosses a budget (the turn dies on it).

The totals are the same (every field is a delta; the sum of deltas is the delta); a
loop's iteration and the order against reservations are kept, which is all resume's
ledger replay reads (`journal/rows.py`: one `charge` row per event).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from supervisor import events as ev

USAGE_INTERVAL_S = 0.5
"""Usage reports charged within this long are published as one event: live enough for
a cost column and a budget warning, and a sim reply (60 tokens at 200/s) is one."""


class UsageMerger:
    """Sums `UsageCharged` deltas of one loop's iteration; `publish` gets the sums."""

    def __init__(
        self,
        publish: Callable[[ev.UsageCharged], None],
        *,
        loop: str,
        iteration: int,
        interval: float | None = None,
    ) -> None:
        self._publish = publish
        self._loop = loop
        self._iteration = iteration
        self._interval = USAGE_INTERVAL_S if interval is None else interval
        self._since: float | None = None
        """When the first report not yet published came (None: nothing pending)."""
        self._input = self._output = self._cache_creation = self._cache_read = 0
        self._usd = 0.0
        self._cpu_s = 0.0
        self.on_pending: Callable[[], None] = lambda: None
        """Called when a window opens: the turn's timer starts ticking (`tick`)."""

    def add(
        self,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_creation_tokens: int,
        cache_read_tokens: int,
        usd: float,
        cpu_s: float,
    ) -> None:
        """One charged report; published with the others of its window."""
        self._input += input_tokens
        self._output += output_tokens
        self._cache_creation += cache_creation_tokens
        self._cache_read += cache_read_tokens
        self._usd += usd
        self._cpu_s += cpu_s
        now = time.monotonic()
        if self._since is None:
            self._since = now
            self.on_pending()
        elif now - self._since >= self._interval:  # the timer is late (a busy loop)
            self.flush()

    def flush(self) -> None:
        """Publish what is pending, as one event (nothing if nothing is)."""
        if self._since is None:
            return
        event = ev.UsageCharged(
            loop=self._loop,
            iteration=self._iteration,
            input_tokens=self._input,
            output_tokens=self._output,
            cache_creation_tokens=self._cache_creation,
            cache_read_tokens=self._cache_read,
            usd=self._usd,
            cpu_s=self._cpu_s,
        )
        self._since = None
        self._input = self._output = self._cache_creation = self._cache_read = 0
        self._usd = 0.0
        self._cpu_s = 0.0
        self._publish(event)

    def tick(self) -> bool:
        """Publish the window if it is due; whether one is still pending. Called by the
        turn's timer (`transcript.OutputCoalescer.run_flusher`), which ticks while
        text is held or this returns True."""
        since = self._since
        if since is not None and time.monotonic() - since >= self._interval:
            self.flush()
            return False
        return since is not None
