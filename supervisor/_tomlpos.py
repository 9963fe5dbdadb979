"""Where each key of a TOML document is written: tomllib returns values, not positions.

Run on text tomllib has already accepted, so the scanner can trust the grammar and
stay small: it follows `[table]` / `[[array]]` headers (counting array entries),
dotted keys, inline tables and arrays (indexing their elements), and skips the
contents of strings and comments. A path is the tuple of keys and array indices
that reaches a value, e.g. ("loop", 0, "checks", 1, "timeout").
"""

from __future__ import annotations

import contextlib
import re
from bisect import bisect_right

KeyPath = tuple[str | int, ...]
Pos = tuple[int, int]
"""1-based (line, column) of a key's first character."""

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPE = re.compile(r"\\(u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


def key_positions(src: str) -> dict[KeyPath, Pos]:
    """Positions of every key, table header and array element of a valid document.

    Never raises: on text it cannot follow it returns what it found so far.
    """
    scanner = _Scanner(src)
    with contextlib.suppress(_Stop, IndexError, KeyError, ValueError):
        scanner.document()
    return scanner.found


def locate(positions: dict[KeyPath, Pos], path: KeyPath) -> Pos:
    """The position of `path`, else of its nearest recorded ancestor, else 1:1."""
    for end in range(len(path), 0, -1):
        pos = positions.get(path[:end])
        if pos is not None:
            return pos
    return (1, 1)


class _Stop(Exception):
    """The scanner met something it does not understand."""


class _Scanner:
    def __init__(self, src: str) -> None:
        self.src = src
        self.i = 0
        self.found: dict[KeyPath, Pos] = {}
        self.aot_count: dict[KeyPath, int] = {}
        self.line_starts = [0] + [m.end() for m in re.finditer(r"\n", src)]

    def pos(self, offset: int) -> Pos:
        line = bisect_right(self.line_starts, offset)
        return (line, offset - self.line_starts[line - 1] + 1)

    def peek(self, text: str) -> bool:
        return self.src.startswith(text, self.i)

    def expect(self, text: str) -> None:
        if not self.peek(text):
            raise _Stop(text)
        self.i += len(text)

    def skip_blank(self, newlines: bool) -> None:
        """Skip spaces and comments, and line breaks too if `newlines`."""
        src = self.src
        while self.i < len(src):
            ch = src[self.i]
            if ch in " \t" or (newlines and ch in "\r\n"):
                self.i += 1
            elif ch == "#":
                end = src.find("\n", self.i)
                self.i = len(src) if end < 0 else end
            else:
                return

    def document(self) -> None:
        table: KeyPath = ()
        while True:
            self.skip_blank(newlines=True)
            if self.i >= len(self.src):
                return
            if self.peek("["):
                table = self.header()
            else:
                self.keyval(table)
            self.skip_blank(newlines=False)
            if self.i < len(self.src) and self.src[self.i] not in "\r\n":
                raise _Stop("expected end of line")

    def header(self) -> KeyPath:
        array = self.peek("[[")
        self.i += 2 if array else 1
        self.skip_blank(newlines=False)
        keys = self.key()
        self.skip_blank(newlines=False)
        self.expect("]]" if array else "]")
        path = self.resolve(keys[:-1])
        name, pos = keys[-1]
        path += (name,)
        if array:
            self.found.setdefault(path, pos)
            index = self.aot_count.get(path, 0)
            self.aot_count[path] = index + 1
            path += (index,)
        self.found[path] = pos
        return path

    def resolve(self, keys: list[tuple[str, Pos]]) -> KeyPath:
        """Header prefixes: an array of tables means its latest entry."""
        path: KeyPath = ()
        for name, pos in keys:
            path += (name,)
            self.found.setdefault(path, pos)
            if path in self.aot_count:
                path += (self.aot_count[path] - 1,)
        return path

    def key(self) -> list[tuple[str, Pos]]:
        parts = [self.simple_key()]
        while True:
            self.skip_blank(newlines=False)
            if not self.peek("."):
                return parts
            self.i += 1
            self.skip_blank(newlines=False)
            parts.append(self.simple_key())

    def simple_key(self) -> tuple[str, Pos]:
        pos = self.pos(self.i)
        if self.peek('"'):
            self.i += 1
            start = self.i
            self.skip_basic_string()
            return _unescape(self.src[start : self.i - 1]), pos
        if self.peek("'"):
            end = self.src.index("'", self.i + 1)
            name = self.src[self.i + 1 : end]
            self.i = end + 1
            return name, pos
        match = _BARE.match(self.src, self.i)
        if not match:
            raise _Stop("expected a key")
        self.i = match.end()
        return match.group(), pos

    def keyval(self, table: KeyPath) -> None:
        keys = self.key()
        self.skip_blank(newlines=False)
        self.expect("=")
        self.skip_blank(newlines=False)
        path = table
        for name, pos in keys:
            path += (name,)
            self.found.setdefault(path, pos)
        self.found[path] = keys[-1][1]
        self.value(path)

    def value(self, path: KeyPath) -> None:
        if self.peek('"""') or self.peek("'''"):
            self.skip_multiline(self.src[self.i] * 3)
        elif self.peek('"'):
            self.i += 1
            self.skip_basic_string()
        elif self.peek("'"):
            self.i = self.src.index("'", self.i + 1) + 1
        elif self.peek("{"):
            self.inline_table(path)
        elif self.peek("["):
            self.array(path)
        else:
            start = self.i
            while self.i < len(self.src) and self.src[self.i] not in ",]}#\r\n":
                self.i += 1
            if self.i == start:
                raise _Stop("expected a value")

    def skip_basic_string(self) -> None:
        """Move past the closing quote of a "..." string whose opening quote is behind us."""
        src = self.src
        while src[self.i] != '"':
            self.i += 2 if src[self.i] == "\\" else 1
        self.i += 1

    def skip_multiline(self, delim: str) -> None:
        src = self.src
        self.i += 3
        while not src.startswith(delim, self.i):
            self.i += 2 if delim == '"""' and src[self.i] == "\\" else 1
            if self.i >= len(src):
                raise _Stop("unterminated string")
        self.i += 3
        for _ in range(2):  # up to two quotes may end the content: """a""""
            if self.peek(delim[0]):
                self.i += 1

    def inline_table(self, path: KeyPath) -> None:
        self.i += 1
        while True:
            self.skip_blank(newlines=True)
            if self.peek("}"):
                self.i += 1
                return
            self.keyval(path)
            self.skip_blank(newlines=True)
            if self.peek(","):
                self.i += 1
            elif not self.peek("}"):
                raise _Stop("expected , or }")

    def array(self, path: KeyPath) -> None:
        self.i += 1
        index = 0
        while True:
            self.skip_blank(newlines=True)
            if self.peek("]"):
                self.i += 1
                return
            self.found[(*path, index)] = self.pos(self.i)
            self.value((*path, index))
            index += 1
            self.skip_blank(newlines=True)
            if self.peek(","):
                self.i += 1
            elif not self.peek("]"):
                raise _Stop("expected , or ]")


def _unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if len(code) > 1:
            return chr(int(code[1:], 16))
        return _SIMPLE_ESCAPES.get(code, code)

    return _ESCAPE.sub(one, text)
