"""When a scheduled loop runs again: cron expressions (cronsim) or "every 10m".

A scheduled loop runs once at start, then again at each tick. A tick that comes
while the loop is still running is skipped and recorded, never queued: a slow run
must not pile up work. After a restart, `catch_up = "once"` runs once at start if
any tick was missed while the supervisor was down; `"skip"` waits for the next tick.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from supervisor.durations import DurationRangeError, parse_duration

_MAX_TICKS_COUNTED = 10_000


@dataclass(frozen=True, slots=True)
class Schedule:
    expr: str
    every: float | None
    """Seconds for "every ..." schedules; None for cron."""

    @classmethod
    def parse(cls, expr: str) -> Schedule:
        """`expr` checked once, for `check` and `run` alike; raises ValueError with
        the reason (an interval must be > 0 and at most durations.MAX_DURATION)."""
        text = expr.strip()
        if text.lower().startswith("every "):
            try:
                every = parse_duration(text[6:].strip())
            except DurationRangeError as exc:
                raise ValueError(f'"{expr}": {exc}') from None
            except ValueError:
                every = 0.0
            if every <= 0:
                raise ValueError(f'"{expr}": expected "every" and a duration such as "every 10m"')
            return cls(expr, every)
        try:
            if len(text.split()) != 5:
                raise ValueError("expected 5 fields: minute hour day-of-month month day-of-week")
            _cron(text, datetime.now())
        except Exception as exc:  # cronsim raises CronSimError (a plain Exception)
            hint = '(or use "every 10m")'
            raise ValueError(f'invalid cron expression "{expr}": {exc} {hint}') from None
        return cls(expr, None)

    def next_after(self, t: float) -> float:
        """The first tick strictly after epoch time `t`."""
        if self.every is not None:
            return t + self.every
        start = datetime.fromtimestamp(t).replace(microsecond=0)
        return next(_cron(self.expr, start)).timestamp()

    def ticks_between(self, start: float, end: float) -> int:
        """How many ticks fall in (start, end]: the ones skipped by a run that long."""
        if end <= start:
            return 0
        if self.every is not None:
            return int((end - start) // self.every)
        count = 0
        it = _cron(self.expr, datetime.fromtimestamp(start).replace(microsecond=0))
        for tick in it:
            if tick.timestamp() > end or count >= _MAX_TICKS_COUNTED:
                break
            count += 1
        return count


def describe_next(t: float | None) -> str:
    if t is None:
        return "not scheduled"
    delta = timedelta(seconds=max(0, round(t - datetime.now().timestamp())))
    return f"next run {datetime.fromtimestamp(t):%H:%M:%S} (in {delta})"


def _cron(expr: str, start: datetime) -> Iterator[datetime]:
    """The ticks of a cron expression after `start`. cronsim is imported here, by the
    loops that have one, not at every start of `run` (issue 12)."""
    from cronsim import CronSim

    return iter(CronSim(expr, start))
