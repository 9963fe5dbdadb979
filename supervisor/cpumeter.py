"""One CPU sampler for every process group of the supervisor: one /proc scan per tick.

Each `GroupProcess` used to sample its own tree five times a second with psutil
`children(recursive=True)`, each call a scan of all of /proc: the supervisor's cost
was loops x processes on the machine x 5 Hz (issue 12: 50 sleeping agents burnt ~9.7 s
of CPU in 11 s). Here one `CpuMeter`, owned by the Supervisor (`shared`), lists /proc
once per tick, reads each process's `stat` once, and attributes the process to the
group whose session it is in (every group is started with `setsid`, so its session id
is its leader's pid; a process that changes its process group keeps its session).

What a group has spent is the larger of two measures:

* the sum, over every pid ever seen in the session, of the largest
  `utime + stime + cutime + cstime` seen for it (as before): a child reaped by a
  living parent counts through the parent's `c*time`, one whose parent died first
  by the last value seen of it. What a process spent after the last read before it
  died is missed: at most one refresh interval (`FAST_S`) of its CPU, since the
  members already known are re-read every `FAST_S` between the scans (a child that
  outlives its parent and is counted again in the parent's `c*time` is counted twice,
  as before);
* with a cgroup (`cgroup.GroupCgroup`, where the machine allows one), its `cpu.stat`
  `usage_usec`: every exited descendant and any that left the session with `setsid`,
  exactly, from the moment the leader was moved in (a fork in the leader's first
  instants may stay outside it, which is why it is not the only measure).

The rate adapts: a full scan every `SCAN_S` (1 s), and every `FAST_S` (0.2 s) while
some group with a CPU limit (`limit`) is within `NEAR_S` CPU seconds of it (what it
could spend on every core in one slow tick). How far past its limit a group gets
before its callback fires is therefore at most one fast tick of CPU on every core it
uses: `FAST_S` x cores (0.4 s on 2 cores).

Linux reads /proc directly (cheaper than psutil per process, measured in
benchmarks/cpumeter_scan.py); elsewhere psutil gives the same numbers more slowly.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from supervisor import procfs

SCAN_S = 1.0
"""Seconds between /proc scans while no group is near a CPU limit."""
FAST_S = 0.2
"""Seconds between scans near a limit, and between re-reads of known members."""
NEAR_S = SCAN_S * (os.cpu_count() or 1)
"""A group this many CPU seconds short of its limit is sampled every `FAST_S`: as much
as it can spend between two slow scans, so that it cannot cross its limit unseen."""

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PROC = "/proc"
_HAVE_PROC = sys.platform.startswith("linux") and os.path.exists("/proc/self/stat")

_current: ContextVar[CpuMeter | None] = ContextVar("loopvisor_cpumeter", default=None)


@dataclass(frozen=True, slots=True)
class Allowance:
    """CPU seconds a group started in this context may spend before `on_over(cpu_s)`."""

    cpu_s: float
    on_over: Callable[[float], None]


_allowance: ContextVar[Allowance | None] = ContextVar("loopvisor_cpu_allowance", default=None)


@dataclass(frozen=True, slots=True)
class _Stat:
    session: int
    cpu_s: float
    """utime + stime + cutime + cstime."""


@dataclass(slots=True)
class _Group:
    leader: int
    cpu_stat: Path | None
    """The group cgroup's cpu.stat, when it has one."""
    by_pid: dict[int, float] = field(default_factory=dict)
    live: set[int] = field(default_factory=set)
    total: float = 0.0
    limit_s: float | None = None
    on_over: Callable[[float], None] | None = None

    def near_limit(self) -> bool:
        if self.limit_s is None or self.on_over is None:
            return False
        return self.total >= self.limit_s - NEAR_S


class CpuMeter:
    """CPU seconds per process group, sampled for all groups by one task (`run`)."""

    def __init__(self) -> None:
        self._groups: dict[int, _Group] = {}
        self.scans = 0
        """Full /proc scans so far (the regression tests count these)."""
        self._changed = anyio.Event()

    # -- membership ----------------------------------------------------------
    @property
    def groups(self) -> int:
        return len(self._groups)

    def add(self, leader: int, cgroup_dir: Path | None = None) -> None:
        """Meter the session led by `leader` (and its cgroup, if it has one) from now."""
        group = _Group(leader, None if cgroup_dir is None else cgroup_dir / "cpu.stat")
        self._groups[leader] = group
        group.live.add(leader)
        self._refresh(group)
        self._wake()

    def remove(self, leader: int) -> float:
        """The final sample of a group that ends; it is metered no more. Its limit is
        disarmed first: a group that already ended is not killed for its last sample."""
        group = self._groups.get(leader)
        if group is not None:
            group.on_over = None
        total = self.sample(leader)
        self._groups.pop(leader, None)
        self._wake()
        return total

    def members(self, leader: int) -> set[int]:
        """Every pid seen in the group so far."""
        group = self._groups.get(leader)
        return set() if group is None else set(group.by_pid)

    def limit(self, leader: int, limit_s: float, on_over: Callable[[float], None]) -> None:
        """Call `on_over(cpu_s)` once, from the sampler, when the group has spent
        `limit_s`; the sampler speeds up to `FAST_S` when the group gets near it."""
        group = self._groups.get(leader)
        if group is None:
            return
        group.limit_s, group.on_over = limit_s, on_over
        self._check_limit(group)
        self._wake()

    # -- sampling --------------------------------------------------------------
    @property
    def interval(self) -> float:
        """Seconds until the next full scan: `FAST_S` while a group is near its limit."""
        return FAST_S if any(g.near_limit() for g in self._groups.values()) else SCAN_S

    def sample(self, leader: int) -> float:
        """CPU seconds of the group so far, re-reading only what it is known to hold:
        O(its processes), never a scan of /proc."""
        group = self._groups.get(leader)
        if group is None:
            return 0.0
        self._refresh(group)
        return group.total

    def tick(self) -> None:
        """One scan of /proc: every process of every group read once."""
        if not self._groups:
            return
        self.scans += 1
        found: dict[int, dict[int, float]] = {leader: {} for leader in self._groups}
        for pid, stat in _scan():
            members = found.get(stat.session)
            if members is not None:
                members[pid] = stat.cpu_s
        for leader, members in found.items():
            group = self._groups.get(leader)
            if group is None:  # ended while the scan ran (a limit's callback)
                continue
            group.live = set(members)
            for pid, cpu in members.items():
                group.by_pid[pid] = max(cpu, group.by_pid.get(pid, 0.0))
            self._total(group)

    def refresh_known(self) -> None:
        """Re-read the known members of every group (cheap: no scan), so that a
        process's last moments before it dies are missed by at most `FAST_S`. A group
        with a cgroup misses nothing (its cpu.stat counts the dead too): it is re-read
        only near a limit, otherwise the next scan is soon enough (it cannot spend
        `NEAR_S` before it); 50 groups of 3 processes made ~1,000 reads a second."""
        for group in list(self._groups.values()):
            near = group.near_limit()
            if near or group.cpu_stat is None:
                self._refresh(group, cgroup=near)

    async def run(self) -> None:
        """Sample until cancelled: scans every `interval`, re-reads in between."""
        next_scan = 0.0
        while True:
            now = time.monotonic()
            if now >= next_scan:
                self.tick()
                next_scan = now + self.interval
            else:
                self.refresh_known()
            if not self._groups:
                self._changed = anyio.Event()
                await self._changed.wait()
                next_scan = 0.0
                continue
            wait = min(FAST_S, next_scan - now)
            self._changed = anyio.Event()
            with anyio.move_on_after(max(wait, 0.0)):
                await self._changed.wait()
                # a new group or limit: rescan at the (possibly faster) rate from now
                next_scan = min(next_scan, time.monotonic() + self.interval)

    # -- internals -------------------------------------------------------------
    def _wake(self) -> None:
        self._changed.set()

    def _refresh(self, group: _Group, *, cgroup: bool = True) -> None:
        for pid in list(group.live):
            stat = _read(pid)
            if stat is None or stat.session != group.leader:
                group.live.discard(pid)
                continue
            group.by_pid[pid] = max(stat.cpu_s, group.by_pid.get(pid, 0.0))
        self._total(group, cgroup=cgroup)

    def _total(self, group: _Group, *, cgroup: bool = True) -> None:
        read = cgroup and group.cpu_stat is not None
        cgroup_s = _cgroup_usage(group.cpu_stat) if read and group.cpu_stat else None
        measured = math.fsum(group.by_pid.values())
        group.total = max(group.total, measured, cgroup_s or 0.0)
        self._check_limit(group)

    def _check_limit(self, group: _Group) -> None:
        if group.limit_s is None or group.on_over is None or group.total < group.limit_s:
            return
        if group.leader not in group.live:  # its main process is done: so is the turn
            return
        on_over, group.on_over = group.on_over, None
        on_over(group.total)


def current() -> CpuMeter | None:
    """The meter of the Supervisor this task runs under, if any."""
    return _current.get()


@contextlib.contextmanager
def using(meter: CpuMeter) -> Iterator[None]:
    """Make `meter` the one tasks started in this context meter their groups with."""
    token = _current.set(meter)
    try:
        yield
    finally:
        _current.reset(token)


def current_allowance() -> Allowance | None:
    """The CPU allowance of the turn this task runs in, if it has a CPU limit."""
    return _allowance.get()


@contextlib.contextmanager
def allowance(cpu_s: float | None, on_over: Callable[[float], None]) -> Iterator[None]:
    """Every group started in this context gets `cpu_s` (None: no limit): the sampler
    calls `on_over` with the group's CPU seconds when it has spent them."""
    if cpu_s is None:
        yield
        return
    token = _allowance.set(Allowance(cpu_s, on_over))
    try:
        yield
    finally:
        _allowance.reset(token)


@contextlib.asynccontextmanager
async def shared() -> AsyncIterator[CpuMeter]:
    """A meter sampling in the background while the block runs (the Supervisor's)."""
    meter = CpuMeter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(meter.run)
        with using(meter):
            try:
                yield meter
            finally:
                tg.cancel_scope.cancel()


# -- reading processes ----------------------------------------------------------
def _scan() -> Iterator[tuple[int, _Stat]]:
    if not _HAVE_PROC:
        yield from _scan_psutil()
        return
    try:
        with os.scandir(_PROC) as entries:
            pids = [int(e.name) for e in entries if e.name.isdigit()]
    except OSError:  # /proc gone (a chroot, a sandbox): members are still re-read
        return
    for pid in pids:
        stat = _read(pid)
        if stat is not None:
            yield pid, stat


def _read(pid: int) -> _Stat | None:
    if not _HAVE_PROC:
        return _read_psutil(pid)
    try:
        data = procfs.read(f"/proc/{pid}/stat")
    except OSError:
        return None
    return _parse(data)


def _parse(data: bytes) -> _Stat | None:
    """Fields after the command (which may hold spaces and parentheses): state ppid
    pgrp session ... utime(14) stime cutime cstime, in clock ticks."""
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        return _Stat(session=int(fields[3]), cpu_s=ticks / _CLK_TCK)
    except (IndexError, ValueError):
        return None


def _cgroup_usage(cpu_stat: Path) -> float | None:
    try:
        for line in procfs.read(str(cpu_stat)).splitlines():
            if line.startswith(b"usage_usec "):
                return int(line.split()[1]) / 1e6
    except (OSError, ValueError):
        return None
    return None


def _scan_psutil() -> Iterator[tuple[int, _Stat]]:  # pragma: no cover - not Linux
    import psutil  # (only here: importing it costs every run's start ~10 ms)

    for proc in psutil.process_iter():
        stat = _read_psutil(proc.pid)
        if stat is not None:
            yield proc.pid, stat


def _read_psutil(pid: int) -> _Stat | None:  # pragma: no cover - not Linux
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
        session = os.getsid(pid)
    except (psutil.Error, OSError):
        return None
    return _Stat(session, t.user + t.system + t.children_user + t.children_system)
