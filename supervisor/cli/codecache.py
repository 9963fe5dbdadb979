"""The methods `dataclasses` generates, compiled once and kept beside the bytecode.

Python before 3.13 builds every dataclass's `__init__`, `__repr__`, `__eq__`,
`__hash__` and (frozen) `__setattr__` / `__delattr__` from source text and compiles
each one at every start: loopvisor's ~110 dataclasses are ~640 compiles, about a third
of what `run` spends importing itself (issue 12: start-up is most of a short run's
CPU). The text is a pure function of the class statement, so the code compiled from it
can be kept like a module's bytecode: `install()` makes `dataclasses`' calls to `exec`
look the text up in a cache first (compiling it on a miss: the same code, the same
`<string>` file name, the same namespaces, so classes come out as they always did), and
at exit writes what this process used back if anything was new.

The cache file sits in `supervisor/__pycache__` (or under `sys.pycache_prefix`), named
for the interpreter (`dataclass-methods.cpython-311.marshal`: marshal's format changes
between versions), written as bytecode is: atomically, never when bytecode is not
written (`-B`, PYTHONDONTWRITEBYTECODE), silently not at all where the folder is not
writable. Whoever can write it could as well write a `.pyc` there. A file that does
not load (truncated, another format) is an empty cache. Entries are looked up by their
whole source text, so a stale entry can never be used for another text; entries no
longer used are dropped once the file holds more than `MAX_ENTRIES`.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import dataclasses
import marshal
import os
import sys
from pathlib import Path
from types import CodeType
from typing import Any

MAX_ENTRIES = 4000
_FILE_NAME = f"dataclass-methods.{sys.implementation.cache_tag}.marshal"


def cache_path() -> Path | None:
    """Where the cache lives: beside `supervisor`'s own bytecode (None: no cache tag)."""
    if sys.implementation.cache_tag is None:
        return None
    import importlib.util

    package_init = Path(__file__).resolve().parent.parent / "__init__.py"
    return Path(importlib.util.cache_from_source(str(package_init))).with_name(_FILE_NAME)


class CodeCache:
    """Source text -> code object, for the texts `dataclasses` execs."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.known: dict[str, CodeType] = _load(path)
        self.used: dict[str, CodeType] = {}
        self.compiled = 0
        """Texts compiled in this process (misses)."""

    def exec(self, source: Any, globals: Any = None, locals: Any = None) -> None:
        if isinstance(source, str):
            code = self.used.get(source) or self.known.get(source)
            if code is None:
                code = compile(source, "<string>", "exec")
                self.compiled += 1
            self.used[source] = code
            source = code
        builtins.exec(source, globals, locals)

    def save(self) -> None:
        """Write the cache back if this process compiled anything (best effort)."""
        if not self.compiled or self.path is None or sys.dont_write_bytecode:
            return
        entries = {**self.known, **self.used}
        if len(entries) > MAX_ENTRIES:
            entries = dict(self.used)
        data = marshal.dumps(entries)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, self.path)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def _load(path: Path | None) -> dict[str, CodeType]:
    if path is None:
        return {}
    try:
        # One read, then loads: marshal.load(file) reads object by object (~40 ms here).
        loaded = marshal.loads(path.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, CodeType)}


_installed: CodeCache | None = None


def install(path: Path | None = None) -> CodeCache:
    """Route `dataclasses`' exec through the cache (once per process) and save at exit."""
    global _installed
    if _installed is None:
        _installed = CodeCache(cache_path() if path is None else path)
        dataclasses.exec = _installed.exec  # type: ignore[attr-defined]
        atexit.register(_installed.save)
    return _installed
