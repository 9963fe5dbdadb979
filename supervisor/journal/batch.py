"""The journal's batching: events recorded on the event loop without I/O, written
by one writer task in one transaction per batch on a worker thread.

`record()` appends to a pending batch and merges consecutive `output` deltas of one
loop (same iteration and stream) into a single chunk, so a token stream costs one
row per batch rather than one per token; a budget reservation is committed before
the reserving task goes on (write-ahead), together with the others of the same turn
of the event loop (`_write_ahead`). `run_writer()` writes every `interval` or at
`max_batch` rows; a full disk keeps the batch pending and retries (`diskfull.SpaceWatch`). `Journal`
(writer.py) adds the run's bookkeeping on top; what each event becomes is `rows.py`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from supervisor.diskfull import DiskFull, SpaceWatch, is_disk_full
from supervisor.events import AgentOutput, BudgetReserved, Event
from supervisor.journal.rows import Chunk, Row, write_batch
from supervisor.journal.schema import JournalError

CHUNK_MAX_CHARS = 64 * 1024
"""An output chunk is closed at this size, so one row never grows without bound."""


@dataclass(frozen=True, slots=True)
class JournalStatistics:
    pending_events: int
    """Events recorded but not yet committed (including a batch being written)."""
    pending_rows: int
    """Rows those events make after coalescing."""
    batches_written: int
    events_written: int
    rows_written: int
    last_batch_ms: float
    max_batch_ms: float
    batch_ms_p50: float
    """Median write time of the last 1,000 batches."""
    batch_ms_p95: float
    write_seconds: float
    """Total time spent writing batches (the writer thread's busy time)."""


class BatchWriter:
    """Records events and writes them in batches through one SQLite connection."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._run_id: str | None = None
        self._pending: list[Row | Chunk] = []
        self._pending_events = 0
        self._inflight = (0, 0)
        """(events, rows) of the batch being written: still pending until committed."""
        self._open_chunks: dict[str, Chunk] = {}
        self._pending_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake: anyio.Event | None = None
        self._max_batch = 2000
        self._batches = 0
        self._events_written = 0
        self._rows_written = 0
        self._last_ms = 0.0
        self._max_ms = 0.0
        self._recent_ms: deque[float] = deque(maxlen=1000)
        self._write_s = 0.0
        self._closed = False
        self._ahead_queued = False
        """A write-ahead of reservations is scheduled on the event loop (`_write_ahead`)."""
        self._ahead_failed: BaseException | None = None
        """What that write-ahead raised, raised again by the next `record` and the writer."""
        self.space = SpaceWatch(path.parent)
        """Disk-full state: the writer keeps batches and retries (see diskfull.py)."""

    # -- recording (event loop, no I/O but for reservations) -----------------
    def record(self, event: Event) -> None:
        """Append one event to the pending batch. Call from the supervisor's event loop.

        A `BudgetReserved` is written at once, with everything before it (write-ahead):
        the agent sends its request right after reserving, and a kill -9 before the
        next batch would otherwise leave money spent that no journal row covers. A
        reservation of nothing (a command agent's, at each turn: it only waits for the
        budget) puts nothing at stake and goes with the next batch: a transaction on
        the event loop per turn was most of what a short command turn cost the journal.
        """
        if self._ahead_failed is not None:
            failed, self._ahead_failed = self._ahead_failed, None
            raise failed
        with self._pending_lock:
            self._pending_events += 1
            loop: str | None = getattr(event, "loop", None)
            if isinstance(event, AgentOutput):
                chunk = self._open_chunks.get(event.loop)
                if (
                    chunk is not None
                    and chunk.iteration == event.iteration
                    and chunk.stream == event.stream
                    and chunk.size < CHUNK_MAX_CHARS
                ):
                    chunk.add(event)
                    return
                chunk = Chunk(event)
                self._open_chunks[event.loop] = chunk
                self._pending.append(chunk)
            else:
                self._pending.append(Row(event))
                if loop is not None:
                    # Keep a loop's rows in order: later deltas start a new chunk.
                    self._open_chunks.pop(loop, None)
            rows = len(self._pending)
        if isinstance(event, BudgetReserved) and (event.tokens or event.usd) and not self._closed:
            self._write_ahead()
        elif rows >= self._max_batch and self._wake is not None:
            self._wake.set()

    def _write_ahead(self) -> None:
        """Commit a reservation (and everything before it) before the agent that made it
        goes on, in one transaction with every other reservation made in the same turn
        of the event loop: 1,000 loops reserving together were 1,000 transactions on
        the event loop. The commit is a callback scheduled now, and
        `LedgerTurnBudget.reserve` takes a checkpoint after booking: asyncio runs ready
        callbacks in the order they were scheduled, so this one runs (and a full disk
        cancels the turn, `space.on_full`) before the reserving task is resumed. Off the
        event loop (a synchronous caller) it is committed at once."""
        if self._ahead_queued:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush_reservation()
            return
        self._ahead_queued = True
        loop.call_soon(self._flush_ahead)

    def _flush_ahead(self) -> None:
        self._ahead_queued = False
        if self._closed:
            return
        try:
            self._flush_reservation()
        except Exception as exc:  # a callback's error would only be logged: raise it later
            self._ahead_failed = exc
            if self._wake is not None:
                self._wake.set()

    def _flush_reservation(self) -> None:
        """Write-ahead of a reservation; on a full disk `space.on_full` cancels the turn."""
        if not self.space.due():
            return  # full: the turn was cancelled and no new one starts
        try:
            self.flush_now()
        except DiskFull:
            self.space.failed()
        else:
            self.space.written()

    # -- writing -------------------------------------------------------------
    async def run_writer(self, interval: float = 0.05, max_batch: int = 2000) -> None:
        """The single writer task: one transaction per `interval` or per `max_batch` rows.

        On a full disk the batch stays pending and is retried with a backoff (see
        diskfull.py). On cancellation it flushes what is pending (shielded) and ends.
        """
        self._max_batch = max_batch
        try:
            while True:
                self._wake = anyio.Event()
                with anyio.move_on_after(self.space.retry_in(interval)):
                    await self._wake.wait()
                if self._ahead_failed is not None:
                    failed, self._ahead_failed = self._ahead_failed, None
                    raise failed
                if self._pending and self.space.due():
                    await self._write_pending()
        finally:
            self._wake = None
            with anyio.CancelScope(shield=True):
                await self._write_pending()

    async def _write_pending(self) -> None:
        try:
            await anyio.to_thread.run_sync(self.flush_now)
        except DiskFull:
            self.space.failed()
        else:
            self.space.written()

    def flush_now(self) -> None:
        """Write everything pending now, in one transaction (sync: shutdown paths)."""
        with self._write_lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        with self._pending_lock:
            batch, self._pending = self._pending, []
            events, self._pending_events = self._pending_events, 0
            self._open_chunks.clear()
            self._inflight = (events, len(batch))
        if not batch:
            return
        started = time.perf_counter()
        try:
            if self._closed:
                raise JournalError("journal is closed")
            rows = self._transaction(lambda conn: write_batch(conn, self._run_id, batch))
        except BaseException:
            with self._pending_lock:  # keep the batch for a later attempt
                self._pending[:0] = batch
                self._pending_events += events
                self._open_chunks.clear()
                self._inflight = (0, 0)
            raise
        with self._pending_lock:
            self._inflight = (0, 0)
        elapsed = (time.perf_counter() - started) * 1000.0
        self._batches += 1
        self._events_written += events
        self._rows_written += rows
        self._last_ms = elapsed
        self._max_ms = max(self._max_ms, elapsed)
        self._recent_ms.append(elapsed)
        self._write_s += elapsed / 1000.0

    def _transaction(self, body: Callable[[sqlite3.Connection], int], *, full: bool = False) -> int:
        conn = self._conn
        try:
            if full:
                conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                # SQLite has already rolled back after some errors (SQLITE_FULL among
                # them): a second ROLLBACK would hide the real error behind its own.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            finally:
                if full:
                    conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            if is_disk_full(exc):
                raise DiskFull(self.path.parent) from exc
            raise JournalError(f"{self.path}: write failed: {exc}") from exc
        return result

    def statistics(self) -> JournalStatistics:
        with self._pending_lock:
            pending_events = self._pending_events + self._inflight[0]
            pending_rows = len(self._pending) + self._inflight[1]
        recent = sorted(self._recent_ms)

        def pct(q: float) -> float:
            return recent[min(len(recent) - 1, int(q * len(recent)))] if recent else 0.0

        return JournalStatistics(
            pending_events=pending_events,
            pending_rows=pending_rows,
            batches_written=self._batches,
            events_written=self._events_written,
            rows_written=self._rows_written,
            last_batch_ms=self._last_ms,
            max_batch_ms=self._max_ms,
            batch_ms_p50=pct(0.5),
            batch_ms_p95=pct(0.95),
            write_seconds=self._write_s,
        )
