"""When a scheduled loop runs again: cron expressions (cronsim) or "every 10m".

A scheduled loop runs once at start, then again at each tick. A tick that comes
while the loop is still running is skipped and recorded, never queued: a slow run
must not pile up work. After a restart, `catch_up = "once"` runs once at start if
any tick was missed while the supervisor was down; `"skip"` waits for the next tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cronsim import CronSim

from supervisor import events as ev
from supervisor.config.durations import DurationRangeError, parse_duration

if TYPE_CHECKING:
    from supervisor.loop import LoopRunner

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
            CronSim(text, datetime.now())
        except Exception as exc:  # cronsim raises CronSimError (a plain Exception)
            hint = '(or use "every 10m")'
            raise ValueError(f'invalid cron expression "{expr}": {exc} {hint}') from None
        return cls(expr, None)

    def next_after(self, t: float) -> float:
        """The first tick strictly after epoch time `t`."""
        if self.every is not None:
            return t + self.every
        start = datetime.fromtimestamp(t).replace(microsecond=0)
        return next(iter(CronSim(self.expr, start))).timestamp()

    def ticks_between(self, start: float, end: float) -> int:
        """How many ticks fall in (start, end]: the ones skipped by a run that long."""
        if end <= start:
            return 0
        if self.every is not None:
            return int((end - start) // self.every)
        count = 0
        it = iter(CronSim(self.expr, datetime.fromtimestamp(start).replace(microsecond=0)))
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


async def drive(runner: LoopRunner, publish: Callable[[ev.Event], None]) -> None:
    """Run a loop: once, or (with a schedule) again at every tick until max_runs.

    A loop's own budget applies per run; the global budget covers them all.
    """
    spec = runner.spec
    if spec.schedule is None:
        await runner.run()
        return
    schedule = Schedule.parse(spec.schedule)
    catch_up = False
    skipped = 0
    # A resumed loop either continues the run that was in flight, or waits for its
    # next tick (catch_up = "once": run at once if a tick was missed while down).
    continuing = runner.runs > 0 and runner.state not in ("scheduled", *ev.END_STATES)
    if runner.runs > 0 and not continuing:
        due = schedule.next_after(runner.last_run_at or time.time())
        if due <= time.time() and spec.catch_up == "once":
            catch_up = True
        elif not await _wait_for_tick(runner, schedule):
            return
    while True:
        if not continuing:
            if runner.runs > 0:
                runner.start_new_run()
            runner.runs += 1
            runner.last_run_at = time.time()
            publish(
                ev.ScheduledRun(loop=spec.name, run=runner.runs, skipped=skipped, catch_up=catch_up)
            )
        continuing = catch_up = False
        started = runner.last_run_at or time.time()
        await runner.run()
        if runner.state == "stopped" or (spec.max_runs and runner.runs >= spec.max_runs):
            return
        skipped = schedule.ticks_between(started, time.time())
        if skipped:
            publish(
                ev.Notice(
                    loop=spec.name,
                    level="warning",
                    message=f"{skipped} tick(s) of {spec.schedule!r} came while the run "
                    "was still going: skipped, not queued",
                )
            )
        if not await _wait_for_tick(runner, schedule):
            return


async def _wait_for_tick(runner: LoopRunner, schedule: Schedule) -> bool:
    """Sleep in state `scheduled` until the next tick; False when stopped meanwhile."""
    due = schedule.next_after(time.time())
    runner.next_run = due
    runner.set_scheduled(f"run {runner.runs} {runner.last_outcome or 'done'}; {describe_next(due)}")
    try:
        return await runner.sleep_until(due)
    finally:
        runner.next_run = None
