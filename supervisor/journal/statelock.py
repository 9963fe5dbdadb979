"""One supervisor per state directory: an advisory `flock` on `STATE_DIR/supervisor.lock`.

The kernel owns the lock, so it disappears with the process however that ends
(kill -9 included): a lock file whose holder is gone is simply taken over. The
file carries the holder's PID for the error message only; the flock is the truth.

The file is never unlinked (unlinking while another process waits on the old
inode would let two supervisors in); releasing empties it instead. The fd is
opened non-inheritable, so agents and checks started by the supervisor never
keep the lock alive after it dies.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from supervisor.diskfull import DiskFull, is_disk_full
from supervisor.statedir import ensure_state_dir, open_private

LOCK_NAME = "supervisor.lock"
_RETRY_S = 0.25
"""How long `acquire` retries: `lock_holder` probes hold the lock for microseconds."""


class StateLocked(Exception):
    """Another live loopvisor holds the state directory (exit code 3 in the CLI)."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        self.state_dir = state_dir
        self.pid = pid
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(f"another loopvisor ({who}) is using {state_dir}")


def lock_path(state_dir: Path) -> Path:
    return state_dir / LOCK_NAME


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 64, 0)
    except OSError:
        return None
    try:
        return int(raw.decode("ascii", "replace").strip() or "x")
    except ValueError:
        return None


def _try_flock(fd: int, op: int) -> bool:
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


class StateLock:
    """`with StateLock(state_dir):` — exclusive use of a state dir; raises `StateLocked`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = lock_path(self.state_dir)
        self._fd: int | None = None

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError("StateLock already acquired")
        ensure_state_dir(self.state_dir)
        fd = open_private(self.path, os.O_RDWR | os.O_CREAT)  # 0600, never through a link
        try:
            deadline = time.monotonic() + _RETRY_S
            while not _try_flock(fd, fcntl.LOCK_EX):
                if time.monotonic() >= deadline:
                    raise StateLocked(self.state_dir, _read_pid(fd))
                time.sleep(0.01)
            os.ftruncate(fd, 0)
            try:
                os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            except OSError as exc:
                if is_disk_full(exc):
                    raise DiskFull(self.state_dir) from exc
                raise
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the only fd drops the flock

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def lock_holder(state_dir: Path) -> int | None:
    """PID of the live supervisor using `state_dir`, or None when nobody holds it.

    For readers (`status`, `history`) that want to know whether a run is live.
    Probes with a shared lock for an instant; `StateLock.acquire` retries past it.
    A live holder whose PID is not yet written reports -1.
    """
    path = lock_path(Path(state_dir))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a planted link: nobody holds a lock through it
            return None
        raise
    try:
        if _try_flock(fd, fcntl.LOCK_SH):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        pid = _read_pid(fd)
        return pid if pid is not None else -1
    finally:
        os.close(fd)
