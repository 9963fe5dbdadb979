"""The limits every config input stays within, checked before anything costly runs.

tomllib is recursive (arrays or inline tables nested ~500 deep raise RecursionError)
and quadratic in the parts of one dotted key (20,000 parts: 10 s), `int()` refuses
more than 4,300 digits with a bare ValueError, and a file is read whole (a FIFO
blocks, /dev/zero never ends). So a config is read with a size cap, then scanned
once, linearly, for nesting depth, key parts and number length; only then does
tomllib see it. The scan is lexical: on valid TOML it is exact, and on broken TOML
it may stop at a different place than tomllib would, which is harmless because
the file is refused either way. Every limit is named in its error so that a user
who meets one knows what to change.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from supervisor.sizes import format_size

MAX_CONFIG_BYTES = 256 << 10
"""A loops.toml: 256 KiB (real ones are a few KB; parsing 256 KiB takes ~0.3 s)."""
MAX_NESTING = 32
"""Arrays and inline tables inside one another."""
MAX_KEY_PARTS = 32
"""Parts of one dotted key or table header (`a.b.c` has 3)."""
MAX_NUMBER_DIGITS = 100
"""Characters of one number literal (far more than any float or int64 needs)."""
MAX_NAME_LENGTH = 64
"""Loop, agent and template names (a loop name becomes a path and a git branch)."""
MAX_EXTENDS_DEPTH = 32
"""Templates in one `extends` chain."""
MAX_MAGNITUDE = 10**15
"""The largest integer or number a config value may have (tokens, usd, counts...)."""

_TOKEN = re.compile(
    r'(?P<multiline>"""(?:[^"\\]++|\\.|"(?!""))*+(?:"{3,5}|\Z)'
    r"|'''(?:[^']++|'(?!''))*+(?:'{3,5}|\Z))"
    r'|(?P<string>"(?:[^"\\\n]++|\\[^\n])*+"?|\'[^\'\n]*+\'?)'
    r"|(?P<comment>#[^\n]*+)"
    r"|(?P<open>[\[{])|(?P<close>[\]}])|(?P<dot>\.)"
    r"|(?P<word>[A-Za-z0-9_+-]++)|(?P<space>[ \t]++)|(?P<other>.)",
    re.DOTALL,
)
_NUMBER = re.compile(r"[+-]?[0-9][0-9A-Fa-fxob_]*")


def scan(text: str) -> tuple[int, str] | None:
    """(offset, message) of the first limit `text` breaks, else None. Linear time."""
    depth = 0
    run_start = -1  # offset of the first part of the key being read, -1 outside one
    parts = 0
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind in ("word", "string", "dot", "space"):
            if kind == "word" and len(match[0]) > MAX_NUMBER_DIGITS and _NUMBER.fullmatch(match[0]):
                return match.start(), (
                    f"a number of {len(match[0])} characters: the limit is "
                    f"{MAX_NUMBER_DIGITS} characters"
                )
            if kind in ("word", "string") and run_start < 0:
                run_start, parts = match.start(), 1
            elif kind == "dot" and run_start >= 0:
                parts += 1
            continue
        if run_start >= 0 and parts > MAX_KEY_PARTS:
            return run_start, _too_many_parts(parts)
        run_start = -1
        if kind == "open":
            depth += 1
            if depth > MAX_NESTING:
                return match.start(), (
                    f"arrays or inline tables nested more than {MAX_NESTING} deep: "
                    f"the limit is {MAX_NESTING}"
                )
        elif kind == "close":
            depth = max(0, depth - 1)
    if run_start >= 0 and parts > MAX_KEY_PARTS:
        return run_start, _too_many_parts(parts)
    return None


def _too_many_parts(parts: int) -> str:
    return f"a dotted key of {parts} parts: the limit is {MAX_KEY_PARTS}"


def read_text(path: Path, *, limit: int, encoding: str = "utf-8") -> str:
    """The text of the regular file `path`, at most `limit` bytes.

    Raises OSError (missing, unreadable, name too long), or ValueError (a NUL in the
    name, not a regular file, too large, not valid text): `failure` words either.
    Opened non-blocking, so that a FIFO is refused instead of waiting for a writer.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb", closefd=True) as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        data = file.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"more than {limit} bytes: the limit is {format_size(limit)}")
    return data.decode(encoding)


def failure(exc: OSError | ValueError) -> str:
    """Why a file or directory could not be used, in words (no errno, no repr)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
