"""A patch's lines and their kinds (file header, hunk, added, removed, context): how
`loopvisor diff` and the console's diff screen colour a diff, decided once. Pure: the
console imports it without the git machinery of `gitdiff`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from enum import StrEnum


class DiffKind(StrEnum):
    FILE = "file"
    """`diff --git`, `index`, `---`, `+++`, mode and rename lines: a file's header."""
    HUNK = "hunk"
    """`@@ -1,3 +1,4 @@`."""
    ADD = "add"
    DEL = "del"
    CONTEXT = "context"
    MARKER = "marker"
    """A line loopvisor added (`✂` where the patch was cut)."""


def line_kinds(lines: Iterable[str]) -> Iterator[tuple[DiffKind, str]]:
    """Each line of a patch with its kind. Inside a hunk a line is what its first
    character says (so a removed line `--- x` is a removal, not a header); outside,
    everything up to the next `@@` belongs to the file header."""
    in_hunk = False
    for line in lines:
        if line.startswith("diff --git ") or line.startswith("diff --cc "):
            in_hunk = False
            yield DiffKind.FILE, line
        elif line.startswith("@@"):
            in_hunk = True
            yield DiffKind.HUNK, line
        elif line.startswith("✂"):
            yield DiffKind.MARKER, line
        elif not in_hunk:
            yield DiffKind.FILE, line
        elif line.startswith("+"):
            yield DiffKind.ADD, line
        elif line.startswith("-"):
            yield DiffKind.DEL, line
        else:
            yield DiffKind.CONTEXT, line
