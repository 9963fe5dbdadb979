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
        tick: Callable[[], bool] | None = None,
    ) -> None:
        self._emit = emit
        self._clock = clock
        self._interval = interval
        self._tick = tick
        """Also called at each tick of the flusher, which keeps ticking while it returns
        True (the turn's usage window, `usage_merge`: one timer task a turn, not two)."""
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
            self.wake()

    def wake(self) -> None:
        """Start ticking (text came, or the `tick` hook holds something now)."""
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
        tick = self._tick
        while True:
            if not self._held and not (tick is not None and tick()):
                self._wake = anyio.Event()
                await self._wake.wait()
                self._wake = None
            while True:
                await anyio.sleep(self._interval)
                ticking = tick is not None and tick()
                if not self._held:
                    if ticking:
                        continue
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
    is cut into lines by the one `LineSplitter`, a stream's lines tagged as in plain text.

    Agent text is split when the tail is looked at (`lines`, `snapshot`, `streaming`,
    a line of the loop's own), not as it comes: a command agent's output arrives in
    whole pipe reads of ~1,000 lines, and splitting each read into its last 400 lines
    (strings and tuples the next read pushes out) was ~13% of a streaming run's CPU.
    Text held for later is at most `PENDING_CHARS` plus one chunk, then split in one
    go. Splitting held chunks joined gives what splitting them one by one gives, except
    where a chunk ends inside an over-long line (the splitter cuts such a line where
    the chunk ends): that chunk is split at once, so the lines are the same either way.
    """

    PENDING_CHARS = 256 * 1024

    def __init__(self, max_lines: int = TAIL_LINES) -> None:
        self._lines: deque[TranscriptLine] = deque(maxlen=max_lines)
        self._splitter = LineSplitter(TAIL_LINE_CHARS)
        self._kind = LineKind.TEXT
        """The kind of the line being streamed (its stream's)."""
        self._pending: list[tuple[str, list[str]]] = []
        """Agent text not split yet: runs of one stream's chunks, oldest first."""
        self._pending_chars = 0
        self._open = 0
        """Length of the unfinished line at the end of all text so far."""

    @property
    def lines(self) -> deque[TranscriptLine]:
        self._split_pending()
        return self._lines

    def add(self, text: str, stream: str = "assistant") -> None:
        pending = self._pending
        if pending and pending[-1][0] == stream:
            pending[-1][1].append(text)
        else:
            pending.append((stream, [text]))
        self._pending_chars += len(text)
        end = text.rfind("\n")
        self._open = self._open + len(text) if end < 0 else len(text) - end - 1
        if self._open > TAIL_LINE_CHARS or self._pending_chars > self.PENDING_CHARS:
            self._split_pending()

    def _split_pending(self) -> None:
        if not self._pending:
            return
        keep = self._lines.maxlen
        for stream, parts in self._pending:
            # A big chunk: only its last `keep` lines can stay, so only they are split off.
            self._kind = kind = stream_kind(stream)
            text = parts[0] if len(parts) == 1 else "".join(parts)
            done = self._splitter.feed(text, prefix=stream_tag(stream), keep=keep)
            self._lines.extend(kinded(kind, done))
        self._pending.clear()
        self._pending_chars = 0
        self._open = len(self._splitter.partial)

    def add_line(self, line: TranscriptLine) -> None:
        self.flush_partial()
        self._lines.append(line)

    def flush_partial(self) -> None:
        self._split_pending()
        if self._splitter.partial:
            self._lines.append(TranscriptLine(self._kind, self._splitter.flush()))
            self._open = 0

    @property
    def streaming(self) -> bool:
        """True while a line is being streamed: `snapshot()`'s last line is not complete."""
        self._split_pending()
        return bool(self._splitter.partial)

    def snapshot(self) -> tuple[TranscriptLine, ...]:
        self._split_pending()
        lines = tuple(self._lines)
        partial = self._splitter.partial
        return (*lines, TranscriptLine(self._kind, partial)) if partial else lines
