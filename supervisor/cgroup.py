"""A cgroup v2 per process group, where the machine lets us: nothing leaves a cgroup.

The `PROC_ENV` tag (`reaper`) follows every descendant that keeps its environment;
one that leaves through `setsid` *and* starts over with an empty environment
(`setsid env -i ...`) is found by nothing but its cgroup, which no process can leave
by itself. So where a cgroup v2 hierarchy is mounted and writable (root, or a
systemd-delegated subtree), each `GroupProcess` gets a child cgroup of the
supervisor's own cgroup, `loopvisor-<pid>/<state dir hash>-g<n>`; when the group ends, whatever is
still in it is killed (SIGTERM, then `cgroup.kill`, or SIGKILL to each listed pid on
kernels before 5.14, after the grace) and the cgroup removed.

Probed once at runtime, never assumed: no cgroup2 mount, a read-only one or a
refused mkdir simply mean no cgroups (the tag scan still runs). A child enters its
cgroup itself, before it runs a line of its own program (`entering`: a `/bin/sh`
that writes its pid to `cgroup.procs`, then execs the program), so not even a fork
in its first instants stays outside; moving it from here after the spawn returned
lost that race under load (an escaper forked within ~20 ms stayed in our own
cgroup). No controller is enabled: this is for containment, not limits.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import itertools
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import anyio

_POLL_S = 0.01
_JOIN = '{ echo $$ >"$0/cgroup.procs"; } 2>/dev/null; %sexec "$@"'
"""Run by `/bin/sh -c` with $0 = the cgroup's path and "$@" = the program's argv; the
`%s` unsets PWD, which the shell exports by itself, where the child's environment
had none (the child gets the environment it was given, `childenv`, and nothing more)."""
_serial = itertools.count(1)
_base: Path | None = None
_probed = False


def available() -> bool:
    """Whether process groups get a cgroup here (probes once: creates our base)."""
    return _root() is not None


def _root() -> Path | None:
    global _base, _probed
    if not _probed:
        _probed = True
        _base = _probe()
    return _base


def _probe() -> Path | None:
    if not sys.platform.startswith("linux"):
        return None
    mount = _cgroup2_mount()
    own = _own_cgroup()
    if mount is None or own is None:
        return None
    parent = mount / own.lstrip("/")
    base = parent / f"loopvisor-{os.getpid()}"
    try:
        base.mkdir(exist_ok=True)
        (base / "probe").mkdir()
        (base / "probe").rmdir()
    except OSError:
        with contextlib.suppress(OSError):
            base.rmdir()
        return None
    atexit.register(_remove_empty, base)
    _remove_stale(parent)
    return base


def _remove_stale(parent: Path) -> None:
    """Remove the empty cgroups of dead supervisors; what is still in one is killed
    by the next supervisor of its state dir (`kill_leftovers`), not by any other."""
    for base in _dead_bases(parent):
        _remove_empty(base)


def _dead_bases(parent: Path) -> list[Path]:
    bases = []
    with contextlib.suppress(OSError):
        for base in parent.glob("loopvisor-*"):
            owner = base.name.removeprefix("loopvisor-")
            if owner.isdigit() and int(owner) != os.getpid() and not _alive(int(owner)):
                bases.append(base)
    return bases


def _remove_empty(base: Path) -> None:
    """rmdir the group cgroups in `base`, then `base` (the kernel refuses non-empty ones)."""
    with contextlib.suppress(OSError):
        for group in base.iterdir():
            if group.is_dir():
                GroupCgroup(group).remove()
        base.rmdir()


def label_for(state_dir: str | None) -> str:
    """The prefix of a group's cgroup name: which state dir its supervisor served."""
    if not state_dir:
        return "-"
    return hashlib.sha256(state_dir.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def kill_leftovers(state_dir: str, timeout: float = 2.0) -> list[int]:
    """SIGKILL what dead supervisors of `state_dir` left in their cgroups, remove
    those cgroups; returns the pids. Call it holding the state dir's lock."""
    root = _root()
    if root is None:
        return []
    prefix = f"{label_for(state_dir)}-"
    killed: list[int] = []
    for base in _dead_bases(root.parent):
        with contextlib.suppress(OSError):
            for path in base.iterdir():
                if not (path.is_dir() and path.name.startswith(prefix)):
                    continue
                group = GroupCgroup(path)
                killed += group.pids()
                deadline = time.monotonic() + timeout
                while (pids := group.pids()) and time.monotonic() < deadline:
                    group.sigkill(pids)
                    time.sleep(_POLL_S)
                group.remove()
    _remove_stale(root.parent)
    return sorted(set(killed))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cgroup2_mount() -> Path | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 3 and fields[2] == "cgroup2" and "rw" in fields[3].split(","):
                return Path(fields[1])
    return None


def _own_cgroup() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
    return None


class GroupCgroup:
    """The cgroup of one process group: `adopt` its leader, `kill_all` at its end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._procs = str(path / "cgroup.procs")
        """(Read and written with os calls: a group's start and end go through here.)"""

    @classmethod
    def create(cls, state_dir: str | None = None) -> GroupCgroup | None:
        """A new empty cgroup, or None where there are none to be had; `state_dir` (of
        the supervisor) goes into its name, for `kill_leftovers` after a crash."""
        root = _root()
        if root is None:
            return None
        path = root / f"{label_for(state_dir)}-g{next(_serial)}"
        try:
            path.mkdir()
        except OSError:
            return None
        return cls(path)

    def entering(self, argv: list[str], env: Mapping[str, str]) -> list[str]:
        """`argv` run by a shell that first moves itself (the pid that then execs the
        program) into this cgroup; if it cannot, the program runs anyway and `adopt`
        still moves it from outside. `env` is the environment the child is given."""
        script = _JOIN % ("" if "PWD" in env else "unset PWD; ")
        return ["/bin/sh", "-c", script, str(self.path), *argv]

    def adopt(self, pid: int) -> bool:
        """Move `pid` (and so everything it starts from now on) into this cgroup, if
        `entering` has not already; False (the cgroup removed) if it cannot be moved.

        A child that is already gone (a quick command) counts as adopted: it entered by
        itself first, and what it left running is in the cgroup, to be killed with it.
        """
        try:
            _write(self._procs, str(pid).encode())
        except ProcessLookupError:
            return True
        except OSError:
            if pid in self.pids():
                return True
            self.remove()
            return False
        return True

    def pids(self) -> list[int]:
        try:
            fd = os.open(self._procs, os.O_RDONLY)
        except OSError:
            return []
        try:
            data = b""
            while chunk := os.read(fd, 65536):
                data += chunk
            return [int(x) for x in data.split()]
        except (OSError, ValueError):
            return []
        finally:
            os.close(fd)

    async def kill_all(self, grace: float = 2.0) -> list[int]:
        """Kill everything still in the cgroup: SIGTERM, then SIGKILL what is left after
        `grace`; wait until it is empty (up to `grace` more), remove it. Returns the
        pids that were there. An empty cgroup, the usual end, costs one read.

        What a group leaves running is all here, `setsid`, double-forked and
        environment-scrubbed alike: only a process that moved itself into another
        cgroup is not (`sweep.Sweeper` finds it by its tag).
        """
        left = self.pids()
        if left:
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
            if not await self._emptied(grace):
                deadline = time.monotonic() + grace
                while (pids := self.pids()) and time.monotonic() < deadline:
                    self.sigkill(pids)
                    await anyio.sleep(_POLL_S)
        self.remove()
        return left

    async def _emptied(self, timeout: float) -> bool:
        """Wait until no process is left in the cgroup (zombies are not listed)."""
        deadline = time.monotonic() + timeout
        while self.pids():
            if time.monotonic() >= deadline:
                return False
            await anyio.sleep(_POLL_S)
        return True

    def sigkill(self, pids: list[int]) -> None:
        try:
            _write(str(self.path / "cgroup.kill"), b"1")  # Linux 5.14+: atomic, forks too
        except OSError:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.rmdir(self.path)


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
