"""One scan for the leftovers of many groups: what moved itself out of a group's cgroup.

A group with a cgroup (`cgroup`) has what it left running killed by that cgroup when
it ends, `setsid` and environment-scrubbed escapers included. Only a process that
moved itself into another cgroup (which takes write access to one) is not there, and
it still carries the group's tag (`reaper.PROC_ENV`). Looking for it by scanning the
environment of every process on the machine at each group's end cost O(processes)
per group: with 50 agents streaming, 18-27% of the supervisor's main thread (issue
12). The run's `Sweeper` looks for the tags of every group that ended within
`SWEEP_S` of each other in one scan, and scans nothing while no group ends. What is
still due when the run ends is covered by the run's own sweep (every process of the
run, `runtime`). Groups without a cgroup (or outside a Supervisor) still scan for
their own tag at their end (`process.GroupProcess`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar

import anyio

from supervisor import reaper

SWEEP_S = 1.0
"""Most seconds between a group's end and the scan that covers it."""


class Sweeper:
    """Kills, by their tags, what ended groups left outside their cgroups: one /proc
    scan for every group that ended since the last one, at most `interval` after it."""

    def __init__(self, grace: float, interval: float | None = None) -> None:
        self.grace = grace
        self.interval = SWEEP_S if interval is None else interval
        self.scans = 0
        """Sweeps that scanned /proc (the regression tests count these)."""
        self._tags: set[str] = set()
        self._due: float | None = None
        self._wake = anyio.Event()

    def add(self, tag: str) -> None:
        """Sweep for `tag` within `interval`, with every other tag added meanwhile."""
        self._tags.add(tag)
        if self._due is None:
            self._due = time.monotonic() + self.interval
            self._wake.set()

    async def run(self) -> None:
        """Sweep what is due until cancelled."""
        while True:
            if self._due is None:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            await anyio.sleep(max(0.0, self._due - time.monotonic()))
            await self.sweep()

    async def sweep(self) -> list[int]:
        """Kill now every process carrying a tag added so far; returns their pids."""
        tags, self._tags, self._due = frozenset(self._tags), set(), None
        if not tags:
            return []
        self.scans += 1
        return await reaper.kill_tagged(reaper.TagSet(tags), self.grace)


_current: ContextVar[Sweeper | None] = ContextVar("loopvisor_sweeper", default=None)


def current() -> Sweeper | None:
    """The sweeper of the Supervisor this task runs under, if any."""
    return _current.get()


@contextlib.contextmanager
def using(sweeper: Sweeper | None) -> Iterator[None]:
    """Make `sweeper` the one groups ended in this context hand their tags to."""
    token = _current.set(sweeper)
    try:
        yield
    finally:
        _current.reset(token)


@contextlib.asynccontextmanager
async def sweeping(grace: float) -> AsyncIterator[Sweeper]:
    """A sweeper running in the background while the block runs (the Supervisor's)."""
    sweeper = Sweeper(grace)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sweeper.run)
        with using(sweeper):
            try:
                yield sweeper
            finally:
                tg.cancel_scope.cancel()
