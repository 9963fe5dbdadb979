"""Transcript lines: what a line is (its kind and its text) and how streamed text
becomes lines.

A line's kind is decided in the core, where the line is made: `render.describe`
gives each event's line its kind, and agent output takes the kind of its stream.
Front-ends style and print by kind (the console colours by it, a plain printer
may ignore it); nothing downstream guesses a line's kind from the glyphs in its
text, so agent text that happens to start with `⚙ ` is still agent text.

`LineSplitter` is the one place where text that arrives in chunks is cut into
whole lines: the core's transcript tail, the console's transcript and the headless
printer all use it, so they agree on where lines end (and on how an endless line
is cut into bounded pieces).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from enum import StrEnum
from itertools import repeat, starmap
from typing import NamedTuple

MAX_LINE_CHARS = 4096
"""A longer line is kept as several (one endless line must not grow without bound)."""


class LineKind(StrEnum):
    """What a transcript line is. The values are stable names (CSS classes in the
    console, keys on the control socket)."""

    TEXT = "text"
    """The agent's own words (its assistant stream)."""
    OUTPUT = "output"
    """Other output of the agent's process: stdout next to a stream-json reply, raw lines."""
    STDERR = "stderr"
    OPERATOR = "operator"
    """The operator's words (step-in chat) and actions (pause, edit, inject, ...)."""
    PROMPT = "prompt"
    """A prompt as sent (the history screen shows it above the transcript)."""
    ITERATION = "iteration"
    """An iteration begins."""
    ITERATION_END = "iteration-end"
    STATE = "state"
    """The loop's state changed (waiting, paused, stuck, ended)."""
    TOOL = "tool"
    """A tool call."""
    RESULT = "result"
    RESULT_ERROR = "result-error"
    CHECK = "check"
    """A check starts."""
    CHECK_PASS = "check-pass"
    CHECK_FAIL = "check-fail"
    STUCK = "stuck"
    INFO = "info"
    WARNING = "warning"
    """Warnings of the supervisor: budget thresholds, output cut at its limit, reloads."""
    ERROR = "error"
    PLAIN = "plain"
    """Kind not known: a line from a server that does not send kinds."""


STREAM_KINDS: dict[str, LineKind] = {
    "assistant": LineKind.TEXT,
    "stdout": LineKind.OUTPUT,
    "raw": LineKind.OUTPUT,
    "stderr": LineKind.STDERR,
    "operator": LineKind.OPERATOR,
    "setup": LineKind.OUTPUT,
    "warning": LineKind.WARNING,
}
NOTICE_KINDS: dict[str, LineKind] = {
    "info": LineKind.INFO,
    "warning": LineKind.WARNING,
    "error": LineKind.ERROR,
}


def stream_kind(stream: str) -> LineKind:
    """The kind of the lines of an output stream (an unknown stream is other output)."""
    return STREAM_KINDS.get(stream, LineKind.OUTPUT)


def stream_tag(stream: str) -> str:
    """What a line of `stream` starts with in plain text: nothing for the agent's own
    words, `[stderr] ` and the like for the rest (so plain text still tells them apart)."""
    return "" if stream == "assistant" else f"[{stream}] "


class TranscriptLine(NamedTuple):
    """One line of a transcript: its kind, decided where the line was made, and its text."""

    kind: LineKind
    text: str


def kinded(kind: LineKind, texts: Iterable[str]) -> Iterator[TranscriptLine]:
    """`texts` as lines of one kind (C speed: a chunk can complete hundreds of lines)."""
    return starmap(TranscriptLine, zip(repeat(kind), texts, strict=False))


def texts(lines: Iterable[TranscriptLine]) -> list[str]:
    return [line.text for line in lines]


def line_pieces(line: str, width: int = MAX_LINE_CHARS) -> list[str]:
    """`line` as pieces of at most `width` characters (an empty line stays one)."""
    if len(line) <= width:
        return [line]
    return [line[i : i + width] for i in range(0, len(line), width)]


class LineSplitter:
    """Text that arrives in chunks, cut into whole lines; the unfinished end (`partial`)
    waits for the next chunk.

    With `max_chars`, a line is never longer: a longer one comes out as pieces, and a
    partial line that grows past it gives its whole pieces out at once (a `\\n`-less
    stream stays bounded). `prefix` (a stream tag) goes in front of every non-empty line
    a chunk completes, before it is cut.
    """

    __slots__ = ("max_chars", "partial")

    def __init__(self, max_chars: int | None = MAX_LINE_CHARS) -> None:
        self.max_chars = max_chars
        self.partial = ""

    def feed(self, text: str, *, prefix: str = "", keep: int | None = None) -> list[str]:
        """The lines `text` completes, oldest first. With `keep`, a caller that holds only
        its last `keep` lines gets at most those (a big chunk is not split line by line)."""
        data = self.partial + text
        if keep is None:
            *complete, self.partial = data.split("\n")
        else:
            *complete, self.partial = data.rsplit("\n", keep + 1)
            if len(complete) > keep:
                del complete[:-keep]
        if prefix:
            complete = [prefix + line if line else line for line in complete]
        width = self.max_chars
        if width is None:
            return complete
        if max(map(len, complete), default=0) > width:  # rare: the usual case stays C speed
            complete = [piece for line in complete for piece in line_pieces(line, width)]
        if len(self.partial) > width:
            *whole, self.partial = line_pieces(self.partial, width)
            complete += whole
        return complete

    def flush(self) -> str:
        """The partial line, now ended (the splitter starts a fresh line)."""
        rest, self.partial = self.partial, ""
        return rest
