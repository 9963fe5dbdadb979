"""Where each key of a TOML document is written: tomllib returns values, not positions.

Run on text tomllib has already accepted, so the scanner can trust the grammar and
stay small: it follows `[table]` / `[[array]]` headers (counting array entries),
dotted keys, inline tables and arrays (indexing their elements), and skips the
contents of strings and comments. A path is the tuple of keys and array indices
that reaches a value, e.g. ("loop", 0, "checks", 1, "timeout").

Positions are kept in a tree, one node per key, so recording a key costs the parts
it is written with: a flat map from path tuples would copy every prefix of every
path (a 20,000-part dotted key took 1.6 GB that way).
"""

from __future__ import annotations

import contextlib
import re
from bisect import bisect_right
from collections.abc import Iterator, Mapping

KeyPath = tuple[str | int, ...]
Pos = tuple[int, int]
"""1-based (line, column) of a key's first character."""

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPE = re.compile(r"\\(u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


class _Node:
    __slots__ = ("aot", "children", "pos")

    def __init__(self) -> None:
        self.pos: Pos | None = None
        self.children: dict[str | int, _Node] = {}
        self.aot = 0
        """Entries seen so far when this key is an array of tables (`[[key]]`)."""

    def child(self, part: str | int, pos: Pos) -> _Node:
        """The child at `part`, created (and placed at `pos`) on first sight."""
        node = self.children.get(part)
        if node is None:
            node = self.children[part] = _Node()
        if node.pos is None:
            node.pos = pos
        return node


class Positions(Mapping[KeyPath, Pos]):
    """Read-only map from a key path to where it is written (a tree underneath)."""

    def __init__(self, root: _Node) -> None:
        self._root = root

    def _node(self, path: KeyPath) -> _Node | None:
        node: _Node | None = self._root
        for part in path:
            node = node.children.get(part) if node is not None else None
        return node

    def __getitem__(self, path: KeyPath) -> Pos:
        node = self._node(path)
        if node is None or node.pos is None or not path:
            raise KeyError(path)
        return node.pos

    def __iter__(self) -> Iterator[KeyPath]:
        stack: list[tuple[KeyPath, _Node]] = [((), self._root)]
        while stack:
            path, node = stack.pop()
            if path and node.pos is not None:
                yield path
            stack.extend(((*path, part), child) for part, child in node.children.items())

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def locate(self, path: KeyPath) -> Pos:
        """The position of `path`, else of its nearest recorded ancestor, else 1:1."""
        node, found = self._root, (1, 1)
        for part in path:
            next_node = node.children.get(part)
            if next_node is None:
                break
            node = next_node
            found = node.pos or found
        return found


def key_positions(src: str) -> Positions:
    """Positions of every key, table header and array element of a valid document.

    Never raises: on text it cannot follow it returns what it found so far.
    """
    scanner = _Scanner(src)
    with contextlib.suppress(_Stop, IndexError, KeyError, ValueError):
        scanner.document()
    return Positions(scanner.root)


class _Stop(Exception):
    """The scanner met something it does not understand."""


class _Scanner:
    def __init__(self, src: str) -> None:
        self.src = src
        self.i = 0
        self.root = _Node()
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
        table = self.root
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

    def header(self) -> _Node:
        array = self.peek("[[")
        self.i += 2 if array else 1
        self.skip_blank(newlines=False)
        keys = self.key()
        self.skip_blank(newlines=False)
        self.expect("]]" if array else "]")
        name, pos = keys[-1]
        node = self.resolve(keys[:-1]).child(name, pos)
        if array:
            node.aot += 1
            node = node.child(node.aot - 1, pos)
        node.pos = pos
        return node

    def resolve(self, keys: list[tuple[str, Pos]]) -> _Node:
        """Header prefixes: an array of tables means its latest entry."""
        node = self.root
        for name, pos in keys:
            node = node.child(name, pos)
            if node.aot:
                node = node.children[node.aot - 1]
        return node

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

    def keyval(self, table: _Node) -> None:
        keys = self.key()
        self.skip_blank(newlines=False)
        self.expect("=")
        self.skip_blank(newlines=False)
        node = table
        for name, pos in keys:
            node = node.child(name, pos)
        node.pos = keys[-1][1]
        self.value(node)

    def value(self, node: _Node) -> None:
        if self.peek('"""') or self.peek("'''"):
            self.skip_multiline(self.src[self.i] * 3)
        elif self.peek('"'):
            self.i += 1
            self.skip_basic_string()
        elif self.peek("'"):
            self.i = self.src.index("'", self.i + 1) + 1
        elif self.peek("{"):
            self.inline_table(node)
        elif self.peek("["):
            self.array(node)
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

    def inline_table(self, node: _Node) -> None:
        self.i += 1
        while True:
            self.skip_blank(newlines=True)
            if self.peek("}"):
                self.i += 1
                return
            self.keyval(node)
            self.skip_blank(newlines=True)
            if self.peek(","):
                self.i += 1
            elif not self.peek("}"):
                raise _Stop("expected , or }")

    def array(self, node: _Node) -> None:
        self.i += 1
        index = 0
        while True:
            self.skip_blank(newlines=True)
            if self.peek("]"):
                self.i += 1
                return
            element = node.child(index, self.pos(self.i))
            element.pos = self.pos(self.i)
            self.value(element)
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
