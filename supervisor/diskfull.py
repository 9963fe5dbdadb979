"""A full disk under the state dir: recognised, waited out, or given up on (exit 5).

Nothing may spend while nothing can be journalled: a reservation must reach the
disk before the request it covers goes out. So when a journal write fails for
want of space the writer keeps the batch in memory and tells the supervisor
(`SpaceWatch.on_full`), which cancels the agent turns in flight (their iterations
run again) and closes the `Gate` every loop passes before its next turn. The
writer retries with a backoff (`RETRY_MIN_S` doubling to `RETRY_MAX_S`); the
first write that succeeds again flushes what was kept and opens the gate
(`on_space`). A disk that stays full for the grace period (`[supervisor]
disk_full_grace`, default `DEFAULT_GRACE_S`) ends the run with exit code 5
(`on_give_up`): memory is not a journal.

SQLite reports a full disk as SQLITE_FULL ("database or disk is full"), and rolls
the transaction back itself; the state lock and the PID file see ENOSPC (or
EDQUOT, a quota) from the OS. `is_disk_full` recognises all of them.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from supervisor.durations import format_duration

DEFAULT_GRACE_S = 600.0
RETRY_MIN_S = 0.1
RETRY_MAX_S = 1.0


class DiskFull(Exception):
    """No space left on the state dir's disk (exit code 5)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        super().__init__(f"no space left on {directory}")


def is_disk_full(exc: BaseException) -> bool:
    """True for the errors a full disk (or an exhausted quota) causes."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF == sqlite3.SQLITE_FULL
    return False


def no_space_left(directory: Path) -> bool:
    """True when not one block is free for us on `directory`'s filesystem.

    For `serve --detach`, whose daemon could not even write its log to say so.
    Root may use the blocks reserved for it; others may not.
    """
    st = os.statvfs(directory)
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) == 0


def _ignore(_message: str) -> None:
    pass


class SpaceWatch:
    """The journal writer's view of its disk: full since when, when to retry, when to quit.

    `failed()` and `written()` are called by the writer after each attempt; the
    callbacks (set by whoever runs the supervisor) are called on the event loop.
    """

    def __init__(self, directory: Path, grace_s: float = DEFAULT_GRACE_S) -> None:
        self.directory = directory
        self.grace_s = grace_s
        self.full_since: float | None = None
        self.gave_up = False
        self._delay = RETRY_MIN_S
        self._next_try = 0.0
        self.on_full: Callable[[str], None] = _ignore
        self.on_space: Callable[[str], None] = _ignore
        self.on_give_up: Callable[[str], None] = _ignore

    @property
    def full(self) -> bool:
        return self.full_since is not None

    def due(self) -> bool:
        """Whether a write should be attempted now (always, unless backing off)."""
        return not self.full or time.monotonic() >= self._next_try

    def retry_in(self, interval: float) -> float:
        """How long the writer sleeps: its interval, or until the next retry."""
        if not self.full:
            return interval
        return max(0.0, self._next_try - time.monotonic())

    def failed(self) -> None:
        now = time.monotonic()
        if self.full_since is None:
            self.full_since = now
            self._delay = RETRY_MIN_S
            self.on_full(
                f"no space left on {self.directory}: the journal cannot be written, so no"
                " agent turn runs until space is freed (the run ends with exit code 5 after"
                f" {format_duration(self.grace_s)})"
            )
        else:
            self._delay = min(self._delay * 2, RETRY_MAX_S)
        self._next_try = now + self._delay
        if not self.gave_up and now - self.full_since >= self.grace_s:
            self.gave_up = True
            self.on_give_up(
                f"no space left on {self.directory} for {format_duration(self.grace_s)}:"
                " run ended; free space and continue it with --resume"
            )

    def written(self) -> None:
        if self.full_since is not None:
            self.full_since = None
            self.on_space(f"space is back on {self.directory}: the journal caught up, loops go on")


class Gate:
    """Open unless the journal's disk is full; every loop waits here before a turn."""

    def __init__(self) -> None:
        self._opened = anyio.Event()
        self._opened.set()
        self.reason = ""

    @property
    def is_open(self) -> bool:
        return self._opened.is_set()

    def close(self, reason: str) -> None:
        self.reason = reason
        if self._opened.is_set():
            self._opened = anyio.Event()

    def open(self) -> None:
        self._opened.set()

    async def wait(self) -> None:
        await self._opened.wait()
