"""Transcript plumbing: coalesce token deltas into chunks, cap them, keep a bounded tail.

Agents stream one delta per token; subscribers (journal, socket, TUI, printer)
want chunks. `OutputCoalescer` turns deltas into one `output` event per stream
per ~50 ms (or per line / size cap), so the event rate is bounded no matter how
fast a model streams. `OutputCap` bounds what one iteration publishes at all, so
an agent printing without end fills neither memory nor the journal.
`TranscriptTail` keeps the last lines of a loop for snapshots; older text lives
in the journal.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import anyio

from supervisor.sizes import OUTPUT_TAIL_BYTES, size_of
from supervisor.textsafe import utf8

FLUSH_INTERVAL_S = 0.05
MAX_CHUNK = 4096
TAIL_LINES = 400
TAIL_LINE_CHARS = 4096
"""A longer line is kept as several (one endless line must not grow without bound)."""


class OutputCoalescer:
    """Buffers text per stream; `emit(text, stream)` is called with coalesced chunks."""

    def __init__(
        self,
        emit: Callable[[str, str], None],
        *,
        clock: Callable[[], float],
        interval: float = FLUSH_INTERVAL_S,
    ) -> None:
        self._emit = emit
        self._clock = clock
        self._interval = interval
        self._stream = "assistant"
        self._parts: list[str] = []
        self._size = 0
        self._held = False
        """Text waits for the timer (`run_flusher` sleeps only then)."""
        self._wake: anyio.Event | None = None

    def add(self, text: str, stream: str) -> None:
        if stream != self._stream:
            self.flush()
            self._stream = stream
        self._parts.append(text)
        self._size += len(text)
        if self._size >= MAX_CHUNK:
            self.flush()
        elif not self._held:
            self._held = True
            if self._wake is not None:
                self._wake.set()

    def flush(self) -> None:
        if self._parts:
            text = "".join(self._parts)
            self._parts.clear()
            self._size = 0
            self._emit(text, self._stream)

    async def run_flusher(self) -> None:
        """Flush what is held at most `interval` after it came, until cancelled (run
        beside the consuming task). It ticks only while text keeps coming (one wake-up
        per interval, as a plain timer) and waits for text after a quiet interval: a
        child's output comes in whole pipe reads that are flushed at once, and 50
        turns woke 20 times a second each for nothing."""
        while True:
            if not self._held:
                self._wake = anyio.Event()
                await self._wake.wait()
                self._wake = None
            while True:
                await anyio.sleep(self._interval)
                if not self._held:
                    break  # a quiet interval: wait for text again
                self._held = False
                self.flush()


class OutputCap:
    """What one iteration publishes: its first `limit` bytes, then only a tail.

    Chunks pass whole (never split: a chunk is the unit other steps, such as
    redaction, already saw), until one would cross `limit`; `on_limit()` then says
    so at once (a live view would otherwise just go quiet). From then on chunks are
    only counted, and the last `tail_bytes` of them are held back (the oldest held
    chunk loses its front when one chunk alone is larger); `finish()`
    reports the count (`on_cut(dropped)`) and then publishes the held tail, so the
    transcript reads: head, marker, end. Memory is bounded by `tail_bytes` plus a
    chunk, whatever the agent prints.
    """

    def __init__(
        self,
        emit: Callable[[str, str], None],
        on_cut: Callable[[int], None],
        *,
        on_limit: Callable[[], None] = lambda: None,
        limit: int,
        tail_bytes: int = OUTPUT_TAIL_BYTES,
    ) -> None:
        self._emit = emit
        self._on_cut = on_cut
        self._on_limit = on_limit
        self.limit = limit
        self._tail_bytes = tail_bytes
        self.published = 0
        """Bytes published so far (head and, after `finish`, the tail)."""
        self.dropped = 0
        """Bytes counted but not published."""
        self._tail: deque[tuple[str, str, int]] = deque()
        self._tail_size = 0
        self._cut = False

    def add(self, text: str, stream: str) -> None:
        size = size_of(text)
        if not self._cut and self.published + size <= self.limit:
            self.published += size
            self._emit(text, stream)
            return
        if not self._cut:
            self._cut = True
            self._on_limit()
        self._tail.append((text, stream, size))
        self._tail_size += size
        # Whole chunks go while the rest still fills the tail; then the oldest left
        # loses its front, so the tail holds `tail_bytes` whatever the chunk sizes
        # (dropping a 64 KiB chunk whole for a 1 KiB one left 1 KiB).
        while len(self._tail) > 1 and self._tail_size - self._tail[0][2] >= self._tail_bytes:
            _, _, old = self._tail.popleft()
            self._tail_size -= old
            self.dropped += old
        if self._tail_size > self._tail_bytes:
            self._trim_oldest(self._tail_size - self._tail_bytes)

    def _trim_oldest(self, excess: int) -> None:
        """Drop the first `excess` bytes of the oldest held chunk (and the rest of a
        character they split): the tail stays within `tail_bytes` however large the
        chunks are. The text was redacted whole before it got here."""
        text, stream, size = self._tail[0]
        rest = utf8(text)[excess:].decode("utf-8", errors="ignore")
        kept = size_of(rest)
        self._tail[0] = (rest, stream, kept)
        self._tail_size -= size - kept
        self.dropped += size - kept

    def finish(self) -> None:
        """Report the cut (if any) and publish the held tail; call once, at the end."""
        if not self._cut:
            return
        self._on_cut(self.dropped)
        while self._tail:
            text, stream, size = self._tail.popleft()
            self.published += size
            self._emit(text, stream)
        self._tail_size = 0


class TextTail:
    """The last `keep` characters of a text that arrives piece by piece (an agent's
    reply): what an agent printing without end costs in memory, whatever it printed."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._parts: deque[str] = deque()
        self._size = 0

    def add(self, text: str) -> None:
        self._parts.append(text)
        self._size += len(text)
        while len(self._parts) > 1 and self._size - len(self._parts[0]) >= self._keep:
            self._size -= len(self._parts.popleft())

    def text(self) -> str:
        return "".join(self._parts)[-self._keep :]


class TranscriptTail:
    """The last TAIL_LINES lines of a loop's transcript, each prefixed by its stream tag.

    Output is queued as it comes (`add`: O(1)) and split into lines when they are looked
    at (`lines`, `snapshot`, `add_line`, which every state change calls) or when
    `PENDING_CHARS` or `PENDING_CHUNKS` have queued. A chunk that alone holds more than
    `max_lines` line ends pushes out all before it, so only it is split then: a child's
    output (one chunk per 64 KiB pipe read, ~1,000 lines) used to be split and tagged
    chunk by chunk, each replacing the last (in a 50-agent run as much CPU as a third
    of encoding the same output). The lines are exactly those of adding each at once.
    """

    PENDING_CHARS = 128 * 1024
    PENDING_CHUNKS = 8
    """What a loop's tail holds unsplit at most (released when its turn ends): two or
    three whole pipe reads, or a few of a model's ~50 ms chunks (each cheap to split:
    holding many would only cost memory)."""

    def __init__(self, max_lines: int = TAIL_LINES) -> None:
        self._lines: deque[str] = deque(maxlen=max_lines)
        self._partial = ""
        self._pending: list[tuple[str, str]] = []
        self._pending_chars = 0

    def add(self, text: str, stream: str = "assistant") -> None:
        self._pending.append((text, stream))
        self._pending_chars += len(text)
        if self._pending_chars > self.PENDING_CHARS or len(self._pending) >= self.PENDING_CHUNKS:
            self._settle()

    @property
    def lines(self) -> deque[str]:
        """The complete lines kept (the line being streamed is not one yet)."""
        self._settle()
        return self._lines

    def add_line(self, line: str) -> None:
        self.flush_partial()
        self._lines.append(line)

    def flush_partial(self) -> None:
        self._settle()
        if self._partial:
            self._lines.append(self._partial)
            self._partial = ""

    @property
    def streaming(self) -> bool:
        """True while a line is being streamed: `snapshot()`'s last line is not complete."""
        self._settle()
        return bool(self._partial)

    def snapshot(self) -> tuple[str, ...]:
        self._settle()
        lines = tuple(self._lines)
        return (*lines, self._partial) if self._partial else lines

    def _settle(self) -> None:
        """Split what is queued into lines."""
        pending = self._pending
        if not pending:
            return
        self._pending, self._pending_chars = [], 0
        keep = self._lines.maxlen
        if keep is not None and len(pending) > 1:
            text, stream = pending[-1]
            parts = text.rsplit("\n", keep + 1)
            if len(parts) == keep + 2:
                # The newest chunk holds more than `keep` line ends: the lines after its
                # first one fill the tail, so neither the older chunks nor the line they
                # left unfinished can show.
                self._lines.clear()
                self._partial = ""
                self._put(parts, stream)
                return
        for text, stream in pending:
            keep_parts = -1 if keep is None else keep + 1
            self._put((self._partial + text).rsplit("\n", keep_parts), stream)

    def _put(self, parts: list[str], stream: str) -> None:
        """`parts`: the text so far split at its line ends (all, or the last `keep` + 1),
        the line still open last."""
        tag = "" if stream == "assistant" else f"[{stream}] "
        keep = self._lines.maxlen
        *complete, self._partial = parts
        # A big chunk: only its last `keep` lines can stay, so only they were split off
        # (one string per kept line, not per line of the chunk).
        if keep is not None and len(complete) > keep:
            del complete[:-keep]
        if tag:
            complete = [tag + line if line else line for line in complete]
        if max(map(len, complete), default=0) <= TAIL_LINE_CHARS:  # the usual case, C speed
            self._lines.extend(complete)
        else:
            for line in complete:
                self._lines.extend(line_pieces(line))
        if len(self._partial) > TAIL_LINE_CHARS:
            *whole, self._partial = line_pieces(self._partial)
            self._lines.extend(whole)


def line_pieces(line: str, width: int = TAIL_LINE_CHARS) -> list[str]:
    """`line` as pieces of at most `width` characters (an empty line stays one): how a
    transcript in memory (here, the TUI's) keeps an endless line bounded."""
    if len(line) <= width:
        return [line]
    return [line[i : i + width] for i in range(0, len(line), width)]
