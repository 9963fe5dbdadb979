"""Transcript plumbing: coalesce token deltas into chunks, keep a bounded tail in RAM.

Agents stream one delta per token; subscribers (journal, socket, TUI, printer)
want chunks. `OutputCoalescer` turns deltas into one `output` event per stream
per ~50 ms (or per line / size cap), so the event rate is bounded no matter how
fast a model streams. `TranscriptTail` keeps the last lines of a loop for
snapshots; older text lives in the journal.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import anyio

FLUSH_INTERVAL_S = 0.05
MAX_CHUNK = 4096
TAIL_LINES = 400


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

    def add(self, text: str, stream: str) -> None:
        if stream != self._stream:
            self.flush()
            self._stream = stream
        self._parts.append(text)
        self._size += len(text)
        if self._size >= MAX_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            text = "".join(self._parts)
            self._parts.clear()
            self._size = 0
            self._emit(text, self._stream)

    async def run_flusher(self) -> None:
        """Flush on a timer until cancelled (run beside the consuming task)."""
        while True:
            await anyio.sleep(self._interval)
            self.flush()


class TranscriptTail:
    """The last TAIL_LINES lines of a loop's transcript, each prefixed by its stream tag."""

    def __init__(self, max_lines: int = TAIL_LINES) -> None:
        self.lines: deque[str] = deque(maxlen=max_lines)
        self._partial = ""

    def add(self, text: str, stream: str = "assistant") -> None:
        tag = "" if stream == "assistant" else f"[{stream}] "
        data = self._partial + text
        *complete, self._partial = data.split("\n")
        for line in complete:
            self.lines.append(tag + line if tag and line else line)

    def add_line(self, line: str) -> None:
        self.flush_partial()
        self.lines.append(line)

    def flush_partial(self) -> None:
        if self._partial:
            self.lines.append(self._partial)
            self._partial = ""

    @property
    def streaming(self) -> bool:
        """True while a line is being streamed: `snapshot()`'s last line is not complete."""
        return bool(self._partial)

    def snapshot(self) -> tuple[str, ...]:
        lines = tuple(self.lines)
        return (*lines, self._partial) if self._partial else lines
