"""Did the agent change its workspace? A content digest taken before and after a turn.

The same-failure detector uses it to tell a loop from progress: the same failing
check after a turn that changed files is an agent working through a problem (a
test still fails while it edits), not one repeating itself. The digest covers the
files git would consider (tracked and untracked, .gitignore respected) in a git
work tree, else every file under the workspace but hidden folders and caches.
Contents are hashed, so a turn that rewrites a file with the same bytes changed
nothing; hashes are cached by (size, mtime), so a digest reads only what changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import ClassVar

import anyio.to_thread

MAX_FILES = 20_000
"""Past this many files the digest is not taken (None): the detector works as if
nothing was known, rather than the supervisor reading a monorepo every turn."""
MAX_HASHED_BYTES = 8 * 1024 * 1024
"""A file larger than this is known by size and mtime only."""
_SKIPPED_DIRS = frozenset({"__pycache__", "node_modules"})
_GIT_TIMEOUT_S = 10.0


class WorkspaceDigest:
    """Digests of one workspace; keeps per-file hashes between calls.

    Loops that share a workspace share one instance (`shared`), so a thousand loops
    on one folder keep one table of hashes, not a thousand."""

    _instances: ClassVar[dict[tuple[Path, tuple[Path, ...]], WorkspaceDigest]] = {}

    @classmethod
    def shared(cls, root: Path, *, exclude: tuple[Path, ...] = ()) -> WorkspaceDigest:
        key = (root, exclude)
        found = cls._instances.get(key)
        if found is None:
            found = cls._instances[key] = cls(root, exclude=exclude)
        return found

    def __init__(self, root: Path, *, exclude: tuple[Path, ...] = ()) -> None:
        self.root = root
        self._hashes: dict[str, tuple[int, int, str]] = {}
        self._excluded = tuple(_relative_prefix(root, path) for path in exclude)
        """Folders under the workspace that are not the agent's work: the state dir
        (the journal changes during every turn) when it lies inside the workspace."""

    async def take(self) -> str | None:
        """A digest of the workspace's files now; None when it cannot be known."""
        return await anyio.to_thread.run_sync(self._take)

    def _take(self) -> str | None:
        names = _git_files(self.root)
        if names is None:
            names = _walk(self.root)
        if names is None:
            return None
        excluded = [p for p in self._excluded if p is not None]
        if excluded:
            names = [n for n in names if not any(n.startswith(p) for p in excluded)]
        total = hashlib.sha256()
        seen: dict[str, tuple[int, int, str]] = {}
        for name in sorted(names):
            entry = self._file(name)
            if entry is None:
                continue
            seen[name] = entry
            total.update(f"{name}\0{entry[2]}\0".encode("utf-8", "surrogateescape"))
        self._hashes = seen
        return total.hexdigest()

    def _file(self, name: str) -> tuple[int, int, str] | None:
        path = self.root / name
        try:
            st = path.lstat()
        except OSError:
            return None
        cached = self._hashes.get(name)
        if cached is not None and cached[:2] == (st.st_size, st.st_mtime_ns):
            return cached
        if path.is_symlink():
            digest = "link:" + os.readlink(path)
        elif st.st_size > MAX_HASHED_BYTES:
            digest = f"big:{st.st_size}:{st.st_mtime_ns}"
        else:
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                return None
        return st.st_size, st.st_mtime_ns, digest


def _relative_prefix(root: Path, path: Path) -> str | None:
    """`path` as a "folder/" prefix of names under `root`, or None when outside it."""
    try:
        rel = path.resolve().relative_to(root.resolve())
    except (OSError, ValueError):
        return None
    return None if str(rel) == "." else f"{rel.as_posix()}/"


def _git_files(root: Path) -> list[str] | None:
    """Tracked and untracked, not ignored, files under `root`; None outside git."""
    try:
        done = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            timeout=_GIT_TIMEOUT_S,
            start_new_session=True,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    names = [n for n in done.stdout.decode("utf-8", "surrogateescape").split("\0") if n]
    return None if len(names) > MAX_FILES else sorted(set(names))


def _walk(root: Path) -> list[str] | None:
    names: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIPPED_DIRS]
        rel = os.path.relpath(folder, root)
        for file in files:
            names.append(file if rel == "." else os.path.join(rel, file))
            if len(names) > MAX_FILES:
                return None
    return names
