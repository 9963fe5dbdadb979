"""Drives a loop's runs: once, or again at every tick of its `schedule.Schedule`.

Split from `schedule` so that the schedule itself (parsed by config, shown by status)
stays a value below the engine, while driving it needs the loop runner.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from supervisor import events as ev
from supervisor.loop import LoopRunner
from supervisor.schedule import Schedule, describe_next


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
