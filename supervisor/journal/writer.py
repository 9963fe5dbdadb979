"""The SQLite (WAL) journal: every event of a run, batched by one writer task.

`record()` is registered as a lossless sink on the supervisor's event bus. It does
no I/O: it appends to a pending batch and merges consecutive `output` deltas of
one loop (same iteration and stream) into a single chunk, so a token stream costs
one row per batch rather than one per token. The one exception is a budget
reservation, committed before the reserving task goes on (write-ahead: it must be on
disk before the agent's request can spend money; once per model request), together
with the others of the same turn of the event loop (`_write_ahead`). `run_writer()` writes the batch
every `interval` (or sooner when `max_batch` rows are pending) in one
transaction, on a worker thread, so a kill -9 leaves whole batches only.

Besides the raw `events` table the writer maintains what readers and resume need
without replaying events: `loops` (last state), `iterations` (prompt as sent,
outcome, timings; one row per attempt) and the budget `ledger` (reserve,
release, charge rows). Run start/end and resume bookkeeping are written with
`synchronous=FULL`; event batches with NORMAL (WAL: a power cut may lose the
last batches, never corrupt the file).

Usage from the runtime::

    journal = Journal.open(state_dir)           # under StateLock(state_dir)
    journal.start_run(run_id, config_path, config_text, loops=config.loops)
    bus.add_sink(journal.record)                 # lossless, sync
    async with anyio.create_task_group() as tg:
        tg.start_soon(journal.run_writer)
        ...                                      # run; cancel tg at the end
    journal.finish_run(run_id, exit_code, reason)
    journal.close()

Resume: `run_id = journal.find_resumable_run()`, `resume = journal.load_resume(run_id)`
(settles what the crash left open, idempotently), `journal.mark_resumed(run_id,
config_path=..., config_text=...)`, then run with the same run id.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from supervisor.diskfull import DiskFull, SpaceWatch, is_disk_full
from supervisor.eventjson import event_json, output_row, text_json
from supervisor.events import (
    AgentOutput,
    BudgetReleased,
    BudgetReserved,
    Event,
    IterationFinished,
    IterationStarted,
    LoopForked,
    LoopStateChanged,
    RunStarted,
    SessionSaved,
    UsageCharged,
)
from supervisor.journal.schema import JOURNAL_NAME, JournalError, connect_writer, quick_check
from supervisor.spec import LoopSpec
from supervisor.statedir import ensure_state_dir, prepare_private, tighten_if_present
from supervisor.textsafe import valid_text

if TYPE_CHECKING:
    from supervisor.journal.resume import RunResume

__all__ = ["Journal", "JournalError", "JournalStatistics", "config_hash"]

CHUNK_MAX_CHARS = 64 * 1024
"""An output chunk is closed at this size, so one row never grows without bound."""


def config_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def spec_json(value: Any) -> Any:
    """A frozen spec as plain JSON data (Paths as strings, mappings as objects)."""
    from dataclasses import fields, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: spec_json(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [spec_json(v) for v in value]
    if hasattr(value, "items"):
        return {str(k): spec_json(v) for k, v in value.items()}
    return value


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


class _Chunk:
    """Consecutive output deltas of one loop, iteration and stream, merged; each text
    kept as its JSON literal, encoded once for the printer too (`eventjson`)."""

    __slots__ = ("iteration", "loop", "parts", "size", "stream", "ts")

    def __init__(self, event: AgentOutput) -> None:
        self.loop = event.loop
        self.iteration = event.iteration
        self.stream = event.stream
        self.ts = event.ts
        self.parts = [text_json(event)]
        self.size = len(event.text)

    def add(self, event: AgentOutput) -> None:
        self.parts.append(text_json(event))
        self.size += len(event.text)

    def payload(self) -> str:
        return output_row(self.ts, self.loop, self.iteration, self.parts, self.stream)


class _Row:
    """Any other event, with its JSON (encoded once, for the printer too: `eventjson`)."""

    __slots__ = ("event", "payload")

    def __init__(self, event: Event) -> None:
        self.event = event
        self.payload = event_json(event)


class Journal:
    """The one writer of `STATE_DIR/journal.sqlite3` (hold a `StateLock` while it is open)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._run_id: str | None = None
        self._pending: list[_Row | _Chunk] = []
        self._pending_events = 0
        self._inflight = (0, 0)
        """(events, rows) of the batch being written: still pending until committed."""
        self._open_chunks: dict[str, _Chunk] = {}
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

    @classmethod
    def open(cls, state_dir: Path) -> Journal:
        """Open (creating the directory and file, upgrading an older schema)."""
        state_dir = ensure_state_dir(Path(state_dir))
        path = state_dir / JOURNAL_NAME
        # Created 0600 before SQLite opens it: SQLite gives -wal and -shm its mode.
        prepare_private(path)
        for suffix in ("-wal", "-shm"):
            tighten_if_present(path.with_name(path.name + suffix))
        return cls(path, connect_writer(path))

    @property
    def run_id(self) -> str | None:
        return self._run_id

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
                chunk = _Chunk(event)
                self._open_chunks[event.loop] = chunk
                self._pending.append(chunk)
            else:
                self._pending.append(_Row(event))
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
            rows = self._transaction(lambda conn: _write_batch(conn, self._run_id, batch))
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

    # -- runs ----------------------------------------------------------------
    def start_run(
        self,
        run_id: str,
        config_path: Path,
        config_text: str,
        *,
        loops: Sequence[LoopSpec] = (),
    ) -> None:
        """Record a new run (synchronous=FULL); later events belong to it."""
        now = time.time()

        def body(conn: sqlite3.Connection) -> int:
            if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
                raise JournalError(f"run {run_id!r} already exists; resume it with mark_resumed")
            conn.execute(
                "INSERT INTO runs (id, config_path, config_hash, config_text, started,"
                " session_started) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, _path_text(config_path), config_hash(config_text), config_text, now, now),
            )
            conn.executemany(
                "INSERT INTO loops (run_id, name, position, spec, updated) VALUES (?, ?, ?, ?, ?)",
                [
                    (run_id, spec.name, i, json.dumps(spec_json(spec)), now)
                    for i, spec in enumerate(loops)
                ],
            )
            return 0

        with self._write_lock:
            self._flush_locked()
            self._transaction(body, full=True)
            self._run_id = run_id

    def finish_run(
        self, run_id: str, exit_code: int, reason: str = "", *, ended: float | None = None
    ) -> None:
        """Flush, then record the run's end (synchronous=FULL); `ended` is when its last
        loop ended (a served run outlives its loops), else now."""
        with self._write_lock:
            self._flush_locked()
            self._transaction(
                lambda conn: (
                    conn.execute(
                        "UPDATE runs SET ended = ?, exit_code = ?, reason = ? WHERE id = ?",
                        (ended or time.time(), exit_code, valid_text(reason), run_id),
                    ).rowcount
                ),
                full=True,
            )

    def close(self) -> None:
        """Flush and close. Idempotent."""
        if self._closed:
            return
        with self._write_lock:
            try:
                self._flush_locked()
            finally:  # closed even when the flush failed (a full disk)
                self._closed = True
                self._conn.close()

    # -- resume --------------------------------------------------------------
    def find_resumable_run(self) -> str | None:
        """The newest run that has no end or whose loops are not all finished."""
        with self._write_lock:
            try:
                from supervisor.journal import settle  # (resume only: a run starts sooner)

                return settle.find_resumable_run(self._conn)
            except sqlite3.DatabaseError as exc:  # the first read of a resume
                raise JournalError(
                    f"{self.path} is not a loopvisor journal or is corrupt: {exc}"
                ) from exc

    def load_resume(self, run_id: str) -> RunResume:
        """What to continue `run_id` from. Settles what a crash left open, once.

        The first call after a crash writes (synchronous=FULL, one transaction) the
        settlement of open reservations (charged up to the reservation: usage seen
        once, plus the unseen rest) and marks in-flight iterations `interrupted`;
        later calls find nothing open and return the same figures.
        """
        from supervisor.journal import settle

        with self._write_lock:
            self._flush_locked()
            quick_check(self._conn, self.path)
            self._transaction(lambda conn: settle.settle(conn, run_id), full=True)
            return settle.load(self._conn, run_id)

    def mark_resumed(
        self,
        run_id: str,
        *,
        config_path: Path | None = None,
        config_text: str | None = None,
    ) -> bool:
        """Continue `run_id` in this process: reopen it, carry its wall time over,
        record the resume and (if the text differs) the changed loops.toml.

        Settles first (as `load_resume` does), so it is safe on its own. Later
        events belong to `run_id`. Returns True when the config changed.
        """
        from supervisor.journal import settle

        with self._write_lock:
            self._flush_locked()
            self._transaction(lambda conn: settle.settle(conn, run_id), full=True)
            changed = self._transaction(
                lambda conn: settle.reopen(
                    conn,
                    run_id,
                    config_path=_path_text(config_path) if config_path is not None else None,
                    config_text=config_text,
                    text_hash=config_hash(config_text) if config_text is not None else None,
                ),
                full=True,
            )
            self._run_id = run_id
        return bool(changed)


def _path_text(path: Path) -> str:
    """A path as journal text: a directory name that is not UTF-8 (its bytes arrive as
    lone surrogates) is recorded with U+FFFD instead of failing the run's start."""
    return valid_text(str(path))


# -- batch -> rows (worker thread) -------------------------------------------
_INSERT_EVENT = (
    "INSERT INTO events (run_id, loop, iteration, ts, type, json) VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_LEDGER = (
    "INSERT INTO ledger (run_id, loop, iteration, kind, tokens, usd, cpu_s, ts)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_LATEST_ATTEMPT = (
    "SELECT id FROM iterations WHERE run_id = ? AND loop = ? AND iteration = ?"
    " ORDER BY attempt DESC LIMIT 1"
)


class _ValidText:
    """The writer's connection with every text parameter made valid (U+FFFD for a lone
    surrogate). SQLite refuses such a string with UnicodeEncodeError; in the writer that
    fails the whole batch, every later batch, and so every loop of the run: one bad
    string from one agent must not cost the bystanders their journal."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, _valid_params(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        return self._conn.executemany(sql, (_valid_params(p) for p in rows))


def _valid_params(params: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(valid_text(p) if isinstance(p, str) else p for p in params)


def _write_batch(
    connection: sqlite3.Connection, run_id: str | None, batch: list[_Row | _Chunk]
) -> int:
    """Insert one batch; returns the number of rows written."""
    conn = _ValidText(connection)
    rows = 0
    run = run_id or ""
    for entry in batch:
        if isinstance(entry, _Chunk):  # its JSON made of its texts' encodings
            chunk = (run, entry.loop, entry.iteration, entry.ts, AgentOutput.type, entry.payload())
            conn.execute(_INSERT_EVENT, chunk)
            rows += 1
            continue
        event = entry.event
        loop = getattr(event, "loop", None)
        iteration = getattr(event, "iteration", None)
        row = (run, loop, iteration, event.ts, event.type, entry.payload)
        cur = conn.execute(_INSERT_EVENT, row)
        rows += 1 + _derive(conn, run, event, cur.lastrowid)
    return rows


def _derive(conn: _ValidText, run: str, event: Event, seq: int | None) -> int:
    """Keep `loops`, `iterations` and `ledger` in step with one event."""
    if isinstance(event, UsageCharged):
        conn.execute(
            _INSERT_LEDGER,
            (run, event.loop, event.iteration, "charge", event.tokens, event.usd, event.cpu_s,
             event.ts),
        )  # fmt: skip
        return 1
    if isinstance(event, (BudgetReserved, BudgetReleased)):
        kind = "reserve" if isinstance(event, BudgetReserved) else "release"
        conn.execute(
            _INSERT_LEDGER,
            (run, event.loop, event.iteration, kind, event.tokens, event.usd, 0.0, event.ts),
        )
        return 1
    if isinstance(event, LoopStateChanged):
        conn.execute(
            "INSERT INTO loops (run_id, name, state, reason, iteration, updated)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, name) DO UPDATE SET"
            " state = excluded.state, reason = excluded.reason, updated = excluded.updated,"
            " iteration = CASE WHEN excluded.iteration > 0 THEN excluded.iteration"
            " ELSE loops.iteration END",
            (run, event.loop, event.state, event.reason, event.iteration, event.ts),
        )
        return 1
    if isinstance(event, IterationStarted):
        (attempt,) = conn.execute(
            "SELECT coalesce(max(attempt), 0) + 1 FROM iterations"
            " WHERE run_id = ? AND loop = ? AND iteration = ?",
            (run, event.loop, event.iteration),
        ).fetchone()
        conn.execute(
            "INSERT INTO iterations (run_id, loop, iteration, attempt, start_seq, prompt, started)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run, event.loop, event.iteration, attempt, seq, event.prompt, event.ts),
        )
        return 1
    if isinstance(event, IterationFinished):
        row = conn.execute(_LATEST_ATTEMPT, (run, event.loop, event.iteration)).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO iterations (run_id, loop, iteration, started) VALUES (?, ?, ?, ?)",
                (run, event.loop, event.iteration, event.ts - event.duration_s),
            )
            row = conn.execute(_LATEST_ATTEMPT, (run, event.loop, event.iteration)).fetchone()
        conn.execute(
            "UPDATE iterations SET outcome = ?, reason = ?, tokens = ?, usd = ?, ended = ?,"
            " session_id = coalesce(?, session_id), git_commit = ?, git_parent = ? WHERE id = ?",
            (event.outcome, event.reason, event.tokens, event.usd, event.ts, event.session_id,
             event.commit, event.commit_parent, row[0]),
        )  # fmt: skip
        return 1
    if isinstance(event, SessionSaved) and event.session_id is not None:
        conn.execute(
            f"UPDATE iterations SET session_id = ? WHERE id = ({_LATEST_ATTEMPT})",
            (event.session_id, run, event.loop, event.iteration),
        )
        return 1
    if isinstance(event, LoopForked):  # a loop not in loops.toml: it goes last
        conn.execute(
            "INSERT OR IGNORE INTO loops (run_id, name, position, updated) VALUES (?, ?,"
            " (SELECT coalesce(max(position), -1) + 1 FROM loops WHERE run_id = ?), ?)",
            (run, event.loop, run, event.ts),
        )
        return 1
    if isinstance(event, RunStarted):
        conn.executemany(
            "INSERT OR IGNORE INTO loops (run_id, name, position, updated) VALUES (?, ?, ?, ?)",
            [(run, name, i, event.ts) for i, name in enumerate(event.loops)],
        )
        return len(event.loops)
    return 0
