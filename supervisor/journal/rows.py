"""What each journal event becomes in SQLite: its `events` row and the derived rows
readers and resume use without replaying events (`loops`, `iterations`, `ledger`).

`write_batch` runs on the writer's worker thread inside the batch's transaction
(`batch.BatchWriter`); the entries it takes (`Row`, `Chunk`) are built on the event
loop by `BatchWriter.record`. Kept apart from the batching so that the schema's
meaning of an event is one list, read next to `schema.py`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from supervisor.eventjson import event_json, output_row, text_json
from supervisor.events import (
    AgentOutput,
    BudgetReleased,
    BudgetReserved,
    Event,
    IterationFinished,
    IterationStarted,
    LoopAdded,
    LoopForked,
    LoopStateChanged,
    RunStarted,
    SessionSaved,
    UsageCharged,
)
from supervisor.textsafe import valid_text


class Chunk:
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


class Row:
    """Any other event, with its JSON (encoded once, for the printer too: `eventjson`)."""

    __slots__ = ("event", "payload")

    def __init__(self, event: Event) -> None:
        self.event = event
        self.payload = event_json(event)


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


def write_batch(
    connection: sqlite3.Connection, run_id: str | None, batch: list[Row | Chunk]
) -> int:
    """Insert one batch; returns the number of rows written."""
    conn = _ValidText(connection)
    rows = 0
    run = run_id or ""
    for entry in batch:
        if isinstance(entry, Chunk):  # its JSON made of its texts' encodings
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
    if isinstance(event, LoopForked | LoopAdded):  # a loop not in loops.toml: it goes last
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
