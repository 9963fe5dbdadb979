"""No process outlives its turn, check or run: tag every child, find the tagged, kill them.

A process group is not enough to contain an agent: a child that calls `setsid` leaves
the group, and once its parent exits it is no longer anyone's descendant either. So:

- Every child `GroupProcess` starts carries `PROC_ENV` in its environment
  (`<run>/<loop>/<iteration>/<kind>#<n>`, see `proc_tag`); its descendants inherit it,
  `setsid` or not. When the group ends, `kill_tagged` finds every process with exactly
  that tag and kills it (SIGTERM, SIGKILL after the grace); at the end of a run every
  process tagged with the run's id. The scan (one read of /proc/PID/environ per
  process, ~1.5 ms for a few hundred processes) runs at those ends only, never per tick.
- On Linux the supervisor is made a child subreaper (`prctl(PR_SET_CHILD_SUBREAPER)`),
  so that orphans are re-parented to it rather than to init (which, in a container,
  may never wait for them). A subreaper must also wait for the orphans it adopts, or
  they stay zombies; asyncio's child watcher waits only for the pids it spawned, and
  stealing one of those would give it a wrong exit code. `reap_adopted` therefore
  reaps only zombie children in a session other than ours (an agent's: children of
  `subprocess.run` stay in ours) that are not a group leader asyncio still waits
  for, and never while a spawn is under way. Rule that follows: a child started in
  a session of its own and waited for later must be started inside `spawning()`
  and registered (as `GroupProcess` does), or its exit status may be taken here.

A process that scrubs its own environment after leaving through `setsid` escapes the
tag; where the machine allows, each group's cgroup holds it (`cgroup`). A group with a
cgroup has its leftovers killed by that cgroup when it ends, so the tag scan, which
reads every process's environment, is not repeated for each such group: a `Sweeper`
scans once for all the groups that ended within `SWEEP_S` of each other, for a process
that moved itself out of its cgroup (issue 12: per group, the scan was 18-27% of the
supervisor's main thread with 50 agents streaming).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import anyio

from supervisor import procfs

if TYPE_CHECKING:
    import psutil

PROC_ENV = "LOOPVISOR_PROC"
"""Environment variable carried by every agent, check and tool process (and inherited by
everything they start): which run, loop, iteration and kind it belongs to."""

STATE_DIR_ENV = "LOOPVISOR_STATE_DIR"
"""Set for every agent and check: the state dir of the supervisor that started it, so
that the next supervisor there can kill what a kill -9 left running (`durable`)."""
_PR_SET_CHILD_SUBREAPER = 36
_POLL_S = 0.02
_ROUNDS = 3
"""Scans per kill: a process may fork between a scan and the kill that follows it."""

_subreaper: bool | None = None
_group_leaders: set[int] = set()
"""Pids of children asyncio spawned and still waits for: never reaped here."""
_spawning = 0
_serial = itertools.count(1)


def proc_tag(run_id: str, loop: str, iteration: int, kind: str) -> str:
    """The `PROC_ENV` value for a loop's turn or check processes (before `unique_tag`)."""
    return f"{run_id}/{loop}/{iteration}/{kind}"


def own_tag(run_id: str, owner: str) -> str:
    """The `PROC_ENV` value for a process the run starts for itself, not for a loop (the
    notifier's commands). It lies outside the loops' `RUN/` prefix, which the run's end
    sweeps: such a process is its owner's to bound and kill (a notification still being
    delivered when the last loop ended is not a leftover). After a crash the state dir's
    marker finds it like any other."""
    return f"{run_id}:{owner}"


def unique_tag(base: str | None) -> str:
    """`base` made unique to one process group in this supervisor (`#<n>` appended)."""
    return f"{base or f'-/{os.getpid()}'}#{next(_serial)}"


def become_subreaper() -> bool:
    """Make this process the reaper of orphaned descendants (Linux); idempotent.

    Returns whether it is one. Elsewhere, or if prctl refuses, a harmless no-op: the
    scans then read every process's environment instead of our descendants' only.
    """
    global _subreaper
    if _subreaper is None:
        _subreaper = False
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):
                # The program's own symbols, libc's among them: find_library("c") runs
                # `ldconfig -p` in a child process at every start.
                libc = ctypes.CDLL(None, use_errno=True)
                _subreaper = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    return _subreaper


@contextlib.contextmanager
def spawning() -> Iterator[Callable[[int], None]]:
    """Around spawning a child asyncio will wait for: no reaping meanwhile (the child
    may already be a zombie before its pid is known); call the yielded function with
    the pid, and `spawned_done(pid)` once asyncio has waited for it."""
    global _spawning
    _spawning += 1
    try:
        yield _group_leaders.add
    finally:
        _spawning -= 1


def spawned_done(pid: int) -> None:
    _group_leaders.discard(pid)


class Match(Protocol):
    """What a scan looks for (`EnvMatch`, `TagSet`)."""

    @property
    def needle(self) -> bytes:
        """Bytes every matching raw /proc/PID/environ contains (the cheap first test)."""
        ...

    def __call__(self, env: Mapping[str, str]) -> bool: ...


def tagged(match: Match) -> list[tuple[psutil.Process, str]]:
    """Live processes whose environment satisfies `match`, with their `PROC_ENV` tag.
    This process and its ancestors are never listed."""
    spared = _spared()
    found: list[tuple[psutil.Process, str]] = []
    for pid, env in _environments(match.needle):
        if pid in spared or not match(env):
            continue
        import psutil  # (only for what is found: importing it costs a run's start ~10 ms)

        with contextlib.suppress(psutil.Error):
            found.append((psutil.Process(pid), env.get(PROC_ENV, "")))
    return found


_ancestry: tuple[int, frozenset[int]] | None = None


def _spared() -> frozenset[int]:
    """This process and its ancestors, looked up once per process (walking the parents
    costs as much as the scan itself). An ancestor that dies hands us to another of
    them (or to init), never to a process outside the set."""
    global _ancestry
    pid = os.getpid()
    if _ancestry is None or _ancestry[0] != pid:  # (a fork has its own)
        _ancestry = (pid, frozenset(_ancestors(pid)))
    return _ancestry[1]


def _ancestors(pid: int) -> list[int]:
    """`pid` and its ancestors up to init, from /proc/PID/stat (psutil elsewhere)."""
    chain = [pid]
    try:
        while chain[-1] > 1:
            stat = procfs.read(f"/proc/{chain[-1]}/stat")
            parent = int(stat.rpartition(b")")[2].split()[1])
            if parent <= 0 or parent in chain:
                break
            chain.append(parent)
    except (OSError, ValueError, IndexError):
        import psutil

        return [pid, *(p.pid for p in psutil.Process(pid).parents())]
    return chain


def _environments(needle: bytes) -> Iterator[tuple[int, dict[str, str]]]:
    """(pid, environment) of every process whose raw environment contains `needle`
    (elsewhere than Linux: of every process). The raw /proc/PID/environ bytes are
    searched first and only those that match are parsed, with no psutil object:
    ~1.5 ms for 50 loops among ~250 processes on a loaded 2-core machine, against
    ~10 ms for psutil's process_iter + environ (benchmarks/reaper_scan.py)."""
    if not os.path.isdir("/proc/self"):
        import psutil

        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                yield proc.pid, proc.environ()
        return
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            data = procfs.read(f"/proc/{name}/environ")
        except OSError:  # gone, or not ours to read
            continue
        if needle in data:
            yield int(name), _parse_environ(data)


def _parse_environ(data: bytes) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in data.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep and key:
            env[os.fsdecode(key)] = os.fsdecode(value)
    return env


@dataclass(frozen=True, slots=True)
class EnvMatch:
    """What a scan looks for: variable `name` equal to `value`, or starting with it."""

    name: str
    value: str
    prefix: bool = False

    @property
    def needle(self) -> bytes:
        """Bytes every matching /proc/PID/environ contains (entries end with NUL)."""
        return f"{self.name}={self.value}".encode("utf-8", "surrogateescape") + (
            b"" if self.prefix else b"\0"
        )

    def __call__(self, env: Mapping[str, str]) -> bool:
        found = env.get(self.name)
        if found is None:
            return False
        return found.startswith(self.value) if self.prefix else found == self.value


@dataclass(frozen=True, slots=True)
class TagSet:
    """`PROC_ENV` equal to any of `tags`: one scan for many groups (`Sweeper`)."""

    tags: frozenset[str]

    @property
    def needle(self) -> bytes:
        """`PROC_ENV=` and what every tag starts with (its run, when all are one run's)."""
        first, last = (min(self.tags), max(self.tags)) if self.tags else ("", "")
        pairs = enumerate(zip(first, last, strict=False))  # a prefix of the other sorts first
        common = next((i for i, (a, b) in pairs if a != b), len(first))
        return f"{PROC_ENV}={first[:common]}".encode("utf-8", "surrogateescape")

    def __call__(self, env: Mapping[str, str]) -> bool:
        return env.get(PROC_ENV) in self.tags


def has_tag(exact: str | None = None, *, prefix: str | None = None) -> EnvMatch:
    """`PROC_ENV` equal to `exact`, or starting with `prefix`."""
    if exact is not None:
        return EnvMatch(PROC_ENV, exact)
    assert prefix is not None
    return EnvMatch(PROC_ENV, prefix, prefix=True)


async def kill_tagged(match: Match, grace: float) -> list[int]:
    """Kill every process whose environment satisfies `match`: SIGTERM, then SIGKILL
    what is left after `grace`. Returns the pids killed; adopted zombies are reaped."""
    killed: list[int] = []
    for _ in range(_ROUNDS):
        found = [proc for proc, _tag in tagged(match)]
        if not found:
            break
        killed += [p.pid for p in found]
        signal_all(found, signal.SIGTERM)
        if not await _wait_gone(found, grace):
            signal_all(found, signal.SIGKILL)
            await _wait_gone(found, grace)
    reap_adopted()
    return killed


def kill_tagged_sync(match: Match, grace: float) -> list[tuple[int, str]]:
    """`kill_tagged` outside an event loop, over every process (a dead supervisor's
    leftovers were re-parented to init), killing each found process's group too.
    Returns (pid, tag) of those killed."""
    killed: list[tuple[int, str]] = []
    own_group = os.getpgid(0)
    for _ in range(_ROUNDS):
        found = tagged(match)
        if not found:
            break
        import psutil  # (what was found is psutil's already)

        killed += [(p.pid, tag) for p, tag in found]
        procs = [p for p, _tag in found]
        groups = {g for g in (group_of(p.pid) for p in procs) if g is not None and g != own_group}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pgid in groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, sig)
            signal_all(procs, sig)
            _, left = psutil.wait_procs(procs, timeout=grace)
            if not left:
                break
    return killed


def signal_all(procs: Iterable[psutil.Process], sig: signal.Signals) -> None:
    import psutil

    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def reap_adopted() -> int:
    """Wait for zombie orphans re-parented to us; returns how many were reaped."""
    if not _subreaper or _spawning:
        return 0
    own_session = os.getsid(0)
    reaped = 0
    for pid in _own_children():
        if pid in _group_leaders:
            continue
        state, session = _state_and_session(pid)
        if state != "Z" or session in (None, own_session):
            continue
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                reaped += 1
    return reaped


def _own_children() -> list[int]:
    """Our children's pids: the kernel's per-thread lists (cheap), else psutil's scan."""
    found = _children("self")
    if found is not None:
        return found
    import psutil

    try:
        return [c.pid for c in psutil.Process().children()]
    except psutil.Error:
        return []


def _children(pid: int | str) -> list[int] | None:
    """The children of `pid` from the kernel's per-thread lists, [] when it is gone;
    None where there are no such lists (a kernel without CONFIG_PROC_CHILDREN)."""
    pids: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return [] if os.path.exists("/proc/self/task") else None
    for tid in tids:
        try:
            pids += map(int, procfs.read(f"/proc/{pid}/task/{tid}/children").split())
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread (or the process) ended meanwhile
            return None
        except (OSError, ValueError):
            continue
    return pids


def descendants(pid: int) -> list[int]:
    """Every descendant of `pid` (children, their children, ...), walking the kernel's
    child lists: O(the subtree), where psutil's `children(recursive=True)` reads the
    stat of every process on the machine. psutil's where those lists are missing."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        kids = _children(frontier.pop())
        if kids is None:
            import psutil

            try:
                return [p.pid for p in psutil.Process(pid).children(recursive=True)]
            except psutil.Error:
                return []
        found += kids
        frontier += kids
    return found


def _state_and_session(pid: int) -> tuple[str | None, int | None]:
    """A process's state letter ("Z": zombie) and session id, from /proc/PID/stat."""
    try:
        fields = procfs.read(f"/proc/{pid}/stat").rpartition(b")")[2].split()
        return fields[0].decode(), int(fields[3])
    except (OSError, IndexError, ValueError):
        import psutil

        try:
            proc = psutil.Process(pid)
            zombie = proc.status() == psutil.STATUS_ZOMBIE
            return ("Z" if zombie else "R"), os.getsid(pid)
        except (psutil.Error, OSError):
            return None, None


async def _wait_gone(procs: list[psutil.Process], timeout: float) -> bool:
    """Poll until every process has exited (a zombie has); reap adopted ones."""
    deadline = time.monotonic() + timeout
    while True:
        if not any(_running(p) for p in procs):
            reap_adopted()
            return True
        if time.monotonic() >= deadline:
            return False
        await anyio.sleep(_POLL_S)


def _running(proc: psutil.Process) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def group_of(pid: int) -> int | None:
    """The process group of `pid`, or None when it is gone."""
    try:
        return os.getpgid(pid)
    except OSError:
        return None
