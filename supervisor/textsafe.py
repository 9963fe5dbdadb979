"""Text made safe where it enters and where it leaves.

Two hazards, one module, so that every entry and exit point uses the same rule:

- Entering: a Python `str` can hold lone UTF-16 surrogates (from JSON `"\\ud800"`,
  `surrogateescape`d argv, a broken SDK string). SQLite, UTF-8 files and sockets
  refuse them with `UnicodeEncodeError`, far from where they came in. `valid_text`
  replaces each with U+FFFD at the door (socket, agent output, API, files, argv),
  and `utf8` encodes whatever is left without ever raising.
- Leaving for a terminal: control characters other than newline and tab can set
  the clipboard (OSC 52), the title (OSC 0), clear the screen or ask the terminal
  to answer (`ESC[6n`). `for_terminal` shows them visibly instead (`\\x1b`), so
  what an agent printed can be read, never obeyed. JSON output needs nothing
  extra: `json.dumps` escapes every control character.
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"

_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 controls but \t and \n, DEL, C1 controls (\x9b is a one-byte CSI on some terminals).
_TERMINAL_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Bidirectional overrides and isolates: they reorder what the operator reads.
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")


def valid_text(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (a no-op on valid text)."""
    if _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(REPLACEMENT, text)


def utf8(text: str) -> bytes:
    """UTF-8 bytes of `text`; a lone surrogate becomes U+FFFD instead of raising."""
    return valid_text(text).encode("utf-8")


def decode(raw: bytes) -> str:
    """Bytes from a child, a file or a socket as valid text (bad bytes become U+FFFD)."""
    return raw.decode("utf-8", errors="replace")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def for_terminal(text: str) -> str:
    """`text` safe to write to a terminal: controls but newline and tab shown as `\\xNN`.

    A carriage return is shown too: a bare CR lets one line overwrite another, which
    is how a hostile agent would hide what it printed.
    """
    text = valid_text(text)
    text = _TERMINAL_CONTROL.sub(_visible, text)
    return _BIDI.sub(_visible, text)


def for_terminal_line(text: str) -> str:
    """Like `for_terminal`, for a one-line field (a loop name, a reason): newlines too."""
    return for_terminal(text).replace("\n", "\\n").replace("\t", "\\t")
