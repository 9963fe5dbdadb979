"""The state dir is private, the way OpenSSH keeps ~/.ssh: one place checks it.

The state dir holds prompts and transcripts (the journal), the control socket, the
lock, the PID file and serve's log. Every mode (`run`, the TUI, `serve`,
`--resume`) goes through `ensure_state_dir` before touching any of them, and
every file in it is opened through `open_private`:

- the directory is created 0700; an existing one must be a real directory (not a
  symbolic link), owned by us and not writable by group or others, else it is
  refused with a message (exit 3). A merely readable one (0755, from an older
  loopvisor) is tightened to 0700. The checks and the chmod act on an fd opened
  with O_NOFOLLOW, so a link swapped in after the check is not followed either.
- the files loopvisor writes there must not be symbolic links (refused, never
  followed: a planted `serve.log -> /etc/passwd` must not be appended to) and are
  created 0600 with O_NOFOLLOW; existing ones are tightened to 0600. SQLite gives
  the journal's -wal and -shm the journal's own mode, so creating the journal
  0600 first makes those 0600 too.
- files replaced whole (the PID file) are written to a fresh O_EXCL temporary and
  renamed over the name: a reader never sees half a file and no link is followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600

STATE_FILES = (
    "journal.sqlite3",
    "journal.sqlite3-wal",
    "journal.sqlite3-shm",
    "journal.sqlite3-journal",
    "supervisor.lock",
    "serve.pid",
    "serve.log",
)
"""The regular files loopvisor keeps in a state dir: none of them may be a link."""


class StateDirError(Exception):
    """The state dir (or a file in it) is unsafe or unusable (exit code 3)."""


def ensure_state_dir(path: Path) -> Path:
    """Create `path` 0700 or check an existing one (see the module docstring); returns it.

    Also refuses a state dir in which one of `STATE_FILES` is a symbolic link or not
    a regular file, so that every mode stops before it has started anything.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=DIR_MODE)
    except OSError as exc:
        raise StateDirError(f"cannot create state dir {path}: {exc.strerror or exc}") from exc
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise StateDirError(_dir_refusal(path, exc)) from exc
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid():
            raise StateDirError(
                f"refusing state dir {path}: it is owned by uid {st.st_uid}, not by you"
                f" (uid {os.getuid()}); use a directory of your own (--state-dir DIR)"
            )
        bits = stat.S_IMODE(st.st_mode)
        if bits & (stat.S_IWGRP | stat.S_IWOTH):
            raise StateDirError(
                f"refusing state dir {path}: mode {bits:04o} lets other users write to it;"
                f" make it private (chmod 700 {path}) or use another --state-dir"
            )
        if bits != DIR_MODE:
            os.fchmod(fd, DIR_MODE)
    except OSError as exc:
        raise StateDirError(f"cannot use state dir {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    for name in STATE_FILES:
        _check_entry(path / name)
    return path


def _dir_refusal(path: Path, exc: OSError) -> str:
    if path.is_symlink():
        return (
            f"refusing state dir {path}: it is a symbolic link (to {os.readlink(path)});"
            " loopvisor never follows links for its state dir, give the real directory"
        )
    if exc.errno == errno.ENOTDIR:
        return f"refusing state dir {path}: it is not a directory"
    return f"cannot use state dir {path}: {exc.strerror or exc}"


def _check_entry(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateDirError(f"cannot use {path}: {exc.strerror or exc}") from exc
    if stat.S_ISLNK(st.st_mode):
        raise StateDirError(
            f"refusing {path}: it is a symbolic link; loopvisor never follows links in its"
            " state dir (remove it)"
        )
    if not stat.S_ISREG(st.st_mode):
        raise StateDirError(f"refusing {path}: it is not a regular file (remove it)")


def open_private(path: Path, flags: int) -> int:
    """`os.open(path, flags)` for a file in the state dir: never through a link, 0600.

    `flags` may include O_CREAT (the file is created 0600) and O_APPEND / O_RDWR;
    O_NOFOLLOW and O_CLOEXEC are added. An existing file must be a regular file of
    ours with one link; it is tightened to 0600. Raises `StateDirError`.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            _check_entry(path)  # raises with the message for a link
        raise StateDirError(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.getuid():
            raise StateDirError(f"refusing {path}: not a private regular file of yours (remove it)")
        if stat.S_IMODE(st.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def prepare_private(path: Path) -> None:
    """Create `path` 0600 if missing, else check and tighten it (for SQLite's files)."""
    os.close(open_private(path, os.O_RDWR | os.O_CREAT))


def tighten_if_present(path: Path) -> None:
    """Check and tighten `path` to 0600 when it exists (a journal's -wal and -shm)."""
    try:
        os.close(open_private(path, os.O_RDONLY))
    except StateDirError:
        if path.exists() or path.is_symlink():
            raise


def replace_private(path: Path, text: str) -> None:
    """Write `text` to `path` (0600) atomically: a fresh O_EXCL temporary, then rename.

    An existing link at `path` is refused rather than silently replaced.
    """
    _check_entry(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
