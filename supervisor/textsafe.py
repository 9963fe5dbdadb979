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
  what an agent printed can be read, never obeyed. JSON output goes through
  `json_text`: `json.dumps` escapes C0 controls but, without `ensure_ascii`, leaves
  DEL, C1 controls (`\\x9b` is a one-byte CSI) and bidi overrides raw, and writes
  a lone surrogate that UTF-8 cannot encode.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any

REPLACEMENT = "\ufffd"

_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 controls but \t and \n, DEL, C1 controls (\x9b is a one-byte CSI on some terminals).
_TERMINAL_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Bidirectional overrides and isolates: they reorder what the operator reads.
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
# What `json.dumps(ensure_ascii=False)` leaves raw that a terminal may obey, and the
# line and paragraph separators that `str.splitlines` (and JavaScript) break lines at.
_JSON_UNESCAPED = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# A JSON `\\uD800`..`\\uDFFF` escape: the only way parsed JSON holds a lone surrogate
# when its text did not (an escaped pair matches too: the walk then changes nothing).
_JSON_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def valid_text(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (a no-op on valid text)."""
    if not _has_surrogate(text):
        return text
    return _SURROGATE.sub(REPLACEMENT, text)


def _has_surrogate(text: str) -> bool:
    # C-speed tests instead of a regex search (~10x faster on a 64 KiB chunk): ASCII
    # cannot hold a surrogate, and UTF-8 encoding fails exactly when there is one.
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def utf8(text: str) -> bytes:
    """UTF-8 bytes of `text`; a lone surrogate becomes U+FFFD instead of raising."""
    return valid_text(text).encode("utf-8")


def valid_data(value: Any) -> Any:
    """Parsed JSON (dicts, lists, strings, numbers) with every string, keys too, valid."""
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, dict):
        return {valid_data(k): valid_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [valid_data(v) for v in value]
    return value


def json_loads(text: str | bytes) -> Any:
    """`json.loads` whose strings are all valid text (`"\\ud800"` becomes U+FFFD).

    Raises ValueError like `json.loads` for text that is not JSON. The walk over the
    result only happens when the text holds a surrogate, escaped or not (rare), so
    feeding every line of an agent's stream through this costs a substring test.
    """
    value = json.loads(text)
    if isinstance(text, bytes):
        text = decode(text)
    escaped = "\\u" in text and _JSON_SURROGATE_ESCAPE.search(text) is not None
    if escaped or _has_surrogate(text):
        return valid_data(value)
    return value


def json_text(value: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """`value` as JSON for stdout: valid UTF-8, readable, and nothing a terminal obeys.

    Non-ASCII stays readable (no `ensure_ascii`); C0 controls are escaped by `json.dumps`
    itself, DEL, C1 controls, bidi overrides and U+2028/U+2029 here as `\\uXXXX` (only
    ever inside JSON strings, so the result is the same JSON value; one object stays one
    line for any line splitter); a lone surrogate becomes U+FFFD.
    Objects JSON does not know become their `str`.
    """
    text = json.dumps(value, ensure_ascii=False, default=str, indent=indent, sort_keys=sort_keys)
    if text.isascii() and "\x7f" not in text:
        return text
    return _JSON_UNESCAPED.sub(_json_escape, valid_text(text))


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def decode(raw: bytes) -> str:
    """Bytes from a child, a file or a socket as valid text (bad bytes become U+FFFD)."""
    return raw.decode("utf-8", errors="replace")


def stream_decoder() -> codecs.IncrementalDecoder:
    """`decode` for a stream read in pieces: a character cut in two by a piece
    boundary is held until the rest arrives (`.decode(piece, final=False)`)."""
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def for_terminal(text: str) -> str:
    """`text` safe to write to a terminal: controls but newline and tab shown as `\\xNN`.

    A carriage return is shown too: a bare CR lets one line overwrite another, which
    is how a hostile agent would hide what it printed.
    """
    if text.isprintable():  # C speed: no control, format (bidi) or surrogate character
        return text
    text = valid_text(text)
    text = _TERMINAL_CONTROL.sub(_visible, text)
    return _BIDI.sub(_visible, text)


def for_terminal_line(text: str) -> str:
    """Like `for_terminal`, for a one-line field (a loop name, a reason): newlines too."""
    return for_terminal(text).replace("\n", "\\n").replace("\t", "\\t")
