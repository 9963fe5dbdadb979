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

from supervisor.lines import (
    MAX_LINE_CHARS,
    LineKind,
    LineSplitter,
    TranscriptLine,
    kinded,
    stream_kind,
    stream_tag,
)
from supervisor.sizes import OUTPUT_TAIL_BYTES, size_of
from supervisor.textsafe import utf8

FLUSH_INTERVAL_S = 0.05
MAX_CHUNK = 4096
TAIL_LINES = 400
TAIL_LINE_CHARS = MAX_LINE_CHARS


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
    """The last TAIL_LINES lines of a loop's transcript, each with its kind; agent text
    is cut into lines by the one `LineSplitter`, a stream's lines tagged as in plain text."""

    def __init__(self, max_lines: int = TAIL_LINES) -> None:
        self.lines: deque[TranscriptLine] = deque(maxlen=max_lines)
        self._splitter = LineSplitter(TAIL_LINE_CHARS)
        self._kind = LineKind.TEXT
        """The kind of the line being streamed (its stream's)."""

    def add(self, text: str, stream: str = "assistant") -> None:
        # A big chunk: only its last `keep` lines can stay, so only they are split off.
        self._kind = kind = stream_kind(stream)
        done = self._splitter.feed(text, prefix=stream_tag(stream), keep=self.lines.maxlen)
        self.lines.extend(kinded(kind, done))

    def add_line(self, line: TranscriptLine) -> None:
        self.flush_partial()
        self.lines.append(line)

    def flush_partial(self) -> None:
        if self._splitter.partial:
            self.lines.append(TranscriptLine(self._kind, self._splitter.flush()))

    @property
    def streaming(self) -> bool:
        """True while a line is being streamed: `snapshot()`'s last line is not complete."""
        return bool(self._splitter.partial)

    def snapshot(self) -> tuple[TranscriptLine, ...]:
        lines = tuple(self.lines)
        partial = self._splitter.partial
        return (*lines, TranscriptLine(self._kind, partial)) if partial else lines
