"""How asyncio learns that a child exited: a pidfd per child, not a thread per child.

On Python 3.11 asyncio's default child watcher starts a thread per child that blocks
in `waitpid`: with 50 agents, 50 threads, each started and ended with its child, and
each exit handed to the event loop through its self-pipe. Python 3.12 made a pidfd per
child the default where the kernel has them (Linux 5.3+): the event loop polls the
pidfd with everything else and waits for the child once it is readable. `use_pidfds`
does the same on 3.11 (~0.4 ms of CPU per child less, benchmarks/overhead.py 50x1);
elsewhere it leaves asyncio as it is.

It waits for exactly the pids asyncio spawned, like the thread did, so the reaper's
rule stands (`reaper.reap_adopted` never waits for a child asyncio waits for).
"""

from __future__ import annotations

import asyncio
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVarTuple

_Ts = TypeVarTuple("_Ts")

_installed = False


if sys.version_info < (3, 12):  # (AbstractChildWatcher is gone from 3.14)

    class PidfdChildWatcher(asyncio.AbstractChildWatcher):
        """Python 3.12's PidfdChildWatcher: loop-independent (the running loop's reader),
        where 3.11's is bound to the loop it was attached to."""

        def __enter__(self) -> PidfdChildWatcher:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def is_active(self) -> bool:
            return True

        def close(self) -> None:
            pass

        def attach_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
            pass

        def add_child_handler(
            self, pid: int, callback: Callable[[int, int, *_Ts], object], *args: *_Ts
        ) -> None:
            loop = asyncio.get_running_loop()
            pidfd = os.pidfd_open(pid)
            loop._add_reader(pidfd, self._do_wait, pid, pidfd, callback, args)  # type: ignore[attr-defined]

        def _do_wait(
            self, pid: int, pidfd: int, callback: Callable[..., Any], args: tuple[Any, ...]
        ) -> None:
            asyncio.get_running_loop()._remove_reader(pidfd)  # type: ignore[attr-defined]
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:  # waited for elsewhere (asyncio says 255 then too)
                returncode = 255
            else:
                returncode = os.waitstatus_to_exitcode(status)
            os.close(pidfd)
            callback(pid, returncode, *args)

        def remove_child_handler(self, pid: int) -> bool:
            return True  # (asyncio never calls it; 3.12's does nothing either)


def use_pidfds() -> None:
    """Make asyncio wait for children with pidfds, on Python 3.11 where the kernel has
    them (once per process; a no-op elsewhere and under other event loops)."""
    global _installed
    if _installed:
        return
    _installed = True
    if sys.version_info >= (3, 12) or not sys.platform.startswith("linux"):
        return
    if not hasattr(os, "pidfd_open") or not _pidfds_work():
        return
    policy = asyncio.get_event_loop_policy()
    if not hasattr(policy, "set_child_watcher"):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # The threads of children already being waited for go on (they are daemons).
        policy.set_child_watcher(PidfdChildWatcher())  # (3.11 only: see above)


def _pidfds_work() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # an old kernel, or a sandbox that refuses the system call
        return False
    return True
