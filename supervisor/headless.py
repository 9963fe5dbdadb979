"""Headless output: readable timestamped lines, or one JSON object per line.

`run` makes the printer a bus sink (`record`): each event is formatted as it is
published, in order and without loss, and `write_out` writes what is queued when it
wakes, in one write and one flush per batch. A JSON line is formatted right after the
journal recorded the same event, so an output chunk is JSON-encoded once for both
(`eventjson`). `serve` subscribes it instead (`consume`), like any other listener.

In JSON mode every event is printed as its `to_dict()` (output chunks included), and
the last line is the summary (`type = "summary"`), whose schema the README documents.
Plain mode prints agent text line by line, prefixed with the loop name, and one line
per other event.

What agents print can carry terminal escapes (clipboard, title, clear screen, a
cursor query the terminal answers on stdin). Plain text shows every control but
newline and tab as `\\x1b` (`textsafe.for_terminal`; loop names and reasons, one-line
fields, as `for_terminal_line`), whether or not stdout is a terminal: a log file
that is `cat` later is a terminal then. JSON lines hold them only JSON-escaped
(`textsafe.json_text`).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncIterator
from typing import TextIO

import anyio

from supervisor import events as ev
from supervisor.eventjson import event_json, output_line_parts
from supervisor.lines import LineSplitter
from supervisor.render import describe
from supervisor.status_table import StatusRow, summary_layout
from supervisor.textsafe import for_terminal, for_terminal_line

BATCH_LINES = 256
BATCH_CHARS = 1 << 20
"""Most lines, and about the most characters, one write holds: a backlog is printed in
bounded pieces (an output event can be a whole 64 KiB pipe read)."""


class HeadlessPrinter:
    def __init__(
        self, *, json_lines: bool = False, stream: TextIO | None = None, transcripts: bool = True
    ) -> None:
        self.json_lines = json_lines
        self.stream = stream or sys.stdout
        self.transcripts = transcripts
        self._splitters: dict[tuple[str, str], LineSplitter] = {}
        """Agent text per (loop, stream) that no newline ended yet."""
        self._width = 12
        self._pending: list[str | tuple[str, ...]] = []
        """Lines formatted but not yet written (`_flush` writes them at once); a line
        may be in pieces (an output event's: its text's encoding is not copied again)."""
        self._size = 0
        self._wake: anyio.Event | None = None
        self._finished = False

    def record(self, event: ev.Event) -> None:
        """A bus sink: format `event` now; `write_out` writes it with what follows."""
        self._format(event)
        if self._wake is not None:
            self._wake.set()

    async def write_out(self) -> None:
        """Write what `record` queued whenever it wakes, until `finish` (then the rest)."""
        try:
            while not self._finished:
                self._wake = anyio.Event()
                await self._wake.wait()
                self._flush()
        finally:
            self._wake = None
            self._flush()

    def finish(self) -> None:
        """Let `write_out` write what is left and return."""
        self._finished = True
        if self._wake is not None:
            self._wake.set()

    async def consume(self, events: AsyncIterator[ev.Event]) -> None:
        """Print events as they come; what is already queued behind one is printed with
        it, in one write and one flush (a busy run queues many output chunks)."""
        take_queued = getattr(events, "receive_nowait", None)
        async for event in events:
            self._format(event)
            if take_queued is not None:
                with contextlib.suppress(anyio.WouldBlock, anyio.EndOfStream):
                    while len(self._pending) < BATCH_LINES and self._size < BATCH_CHARS:
                        self._format(take_queued())
            self._flush()

    def print_event(self, event: ev.Event) -> None:
        self._format(event)
        self._flush()

    def _format(self, event: ev.Event) -> None:
        if self.json_lines:  # encoded once, for the journal too
            if type(event) is ev.AgentOutput:
                self._write_parts(output_line_parts(event))
            else:
                self._write(event_json(event))
            return
        if isinstance(event, ev.RunStarted):
            self._width = max([12, *(len(for_terminal_line(n)) for n in event.loops)])
            verb = "resumed" if event.resumed else "started"
            self._line(event.ts, "", f"run {event.run_id} {verb}: {len(event.loops)} loops")
            return
        if isinstance(event, ev.AgentOutput):
            if self.transcripts:
                self._output(event)
            return
        if isinstance(event, ev.RunFinished):
            self._summary(event)
            return
        loop = getattr(event, "loop", None) or getattr(event, "scope", None) or ""
        if isinstance(event, ev.IterationStarted | ev.LoopStateChanged | ev.IterationFinished):
            self._flush_partial(loop)
        line = describe(event)
        if line is not None:
            self._line(event.ts, loop, line.text)

    def _output(self, event: ev.AgentOutput) -> None:
        key = (event.loop, event.stream)
        # Whole lines as the agent wrote them, however long; only a pending partial line
        # keeps its splitter, the latest last (the order `_flush_partial` prints them in).
        splitter = self._splitters.pop(key, None) or LineSplitter(max_chars=None)
        tag = "│" if event.stream == "assistant" else f"│ {event.stream}:"
        for line in splitter.feed(event.text):
            self._line(event.ts, event.loop, f"{tag} {line}")
        if splitter.partial:
            self._splitters[key] = splitter

    def _flush_partial(self, loop: str) -> None:
        for key in [k for k in self._splitters if k[0] == loop]:
            rest = self._splitters.pop(key).flush()
            if rest:
                self._line(time.time(), loop, f"│ {rest}")

    def _summary(self, event: ev.RunFinished) -> None:
        for key in list(self._splitters):
            self._flush_partial(key[0])
        self._write("")
        layout = summary_layout(self._width)
        for line in layout.table([StatusRow.of_result(r) for r in event.loops]):
            self._write(line)
        reason = f" ({for_terminal_line(event.reason)})" if event.reason else ""
        self._write(
            f"total: {event.tokens:,} tokens, ${event.usd:.4f}, {event.wall_s:.1f}s wall"
            f" — exit code {event.exit_code}{reason}"
        )
        for note in event.notes:
            self._write(f"note: {for_terminal_line(note)}")

    def _line(self, ts: float, loop: str, text: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(ts))
        self._write(f"{stamp} {for_terminal_line(loop):<{self._width}} {for_terminal(text)}")

    def _write(self, text: str) -> None:
        self._pending.append(text)
        self._size += len(text)

    def _write_parts(self, parts: tuple[str, ...]) -> None:
        self._pending.append(parts)
        self._size += sum(map(len, parts))

    def _flush(self) -> None:
        """Write the pending lines: one write and one flush per `BATCH_LINES` lines or
        about `BATCH_CHARS` characters, so a backlog goes out in bounded pieces."""
        pending, self._pending, self._size = self._pending, [], 0
        pieces: list[str] = []
        lines = size = 0
        for line in pending:
            if isinstance(line, str):
                pieces.append(line)
                size += len(line)
            else:
                pieces += line
                size += sum(map(len, line))
            pieces.append("\n")
            lines += 1
            if lines >= BATCH_LINES or size >= BATCH_CHARS:
                self._write_out("".join(pieces))
                pieces.clear()
                lines = size = 0
        if pieces:
            self._write_out("".join(pieces))

    def _write_out(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError:  # a closed pipe or a dead terminal must not take the run down
            pass
