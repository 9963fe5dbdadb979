"""The SQLite (WAL) journal: every event of a run, batched by one writer task.

`record()` is registered as a lossless sink on the supervisor's event bus. It does
no I/O: it appends to a pending batch and merges consecutive `output` deltas of
one loop (same iteration and stream) into a single chunk, so a token stream costs
one row per batch rather than one per token. The one exception is a budget
reservation, committed at once (write-ahead: it must be on disk before the agent's
request can spend money; once per model request). `run_writer()` writes the batch
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

The batching (`record`, `run_writer`, `flush_now`, `statistics`) is
`batch.BatchWriter`, what each event becomes in SQLite is `rows.py`; this module is
the journal's file and the run's bookkeeping (start, finish, resume).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor.journal.batch import BatchWriter, JournalStatistics
from supervisor.journal.schema import JOURNAL_NAME, JournalError, connect_writer, quick_check
from supervisor.spec import LoopSpec
from supervisor.statedir import ensure_state_dir, prepare_private, tighten_if_present
from supervisor.textsafe import valid_text

if TYPE_CHECKING:
    from supervisor.journal.resume import RunResume

__all__ = ["Journal", "JournalError", "JournalStatistics", "config_hash"]


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


class Journal(BatchWriter):
    """The one writer of `STATE_DIR/journal.sqlite3` (hold a `StateLock` while it is open)."""

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
