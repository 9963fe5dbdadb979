"""Rebuilding a run after a crash: settle what it left open, then derive `RunResume`.

`settle` runs once per crash inside one transaction (the Journal holds the write
lock and uses synchronous=FULL); everything it decides is written back, so a
second crash and resume neither charges a reservation twice nor loses it:

* Open reservation (a `reserve` ledger row with no release): the request's end was
  never journalled, so the provider may have billed more than was seen (the
  Messages API reports output usage only when a stream ends). Usage booked after
  the reservation stands (charged once) and the unseen rest of the reservation is
  charged too ("charged at the reservation"): the total is the reservation, which
  bounds what the request could cost. Both are ledger rows whose `settles` column
  names the reservation row.
* In-flight iteration (an `iterations` row without an outcome): gets outcome
  `interrupted`, its tokens/USD so far and an `iteration_finished` event; its
  partial transcript stays in `events`.

`load` is read-only. Rules it applies, per loop:

* next_iteration: iterations are counted from the loop's last reset (a
  `restart` control or a `scheduled_run` event; both start again at iteration
  1). The last attempt's outcome decides: `interrupted` or `error` re-run the
  same number (as `loop.py` does: a retried agent error and an operator
  interrupt repeat the iteration), anything else goes to the next.
* retries_used: `error` outcomes since the last reset (retries inside a turn,
  e.g. rate-limit backoff, leave no event that marks them and are not counted).
* tokens / usd / cpu_s: every `charge` row of the loop in the run (restarts do
  not refund); charged_at_reservation: the crash charges among them.
* session: the last `session` event since the last reset.
* runs / last_run_at (schedules): `run` and `ts` of the last `scheduled_run`
  event, i.e. runs *started* (what `LoopRunner.runs` counts).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from supervisor.checks import check_summary
from supervisor.events import END_STATES, IterationFinished, Notice
from supervisor.journal.edits import loop_edit, run_limits
from supervisor.journal.forks import run_new_loops
from supervisor.journal.landings import landing_state
from supervisor.journal.resume import LoopResume, RunResume
from supervisor.journal.schema import JournalError, has_commits
from supervisor.score import ScoreEntry
from supervisor.textsafe import json_loads

SCHEDULED_RUN = "scheduled_run"
"""`events.ScheduledRun.type`: a scheduled loop's next run starts at iteration 1."""
INTERRUPTED_REASON = "interrupted: the supervisor stopped mid-iteration; it runs again on resume"


def find_resumable_run(conn: sqlite3.Connection) -> str | None:
    ends = ", ".join(f"'{s}'" for s in sorted(END_STATES))
    row = conn.execute(
        "SELECT id FROM runs r WHERE r.ended IS NULL OR EXISTS (SELECT 1 FROM loops l"
        f" WHERE l.run_id = r.id AND l.state NOT IN ({ends}))"
        " ORDER BY r.started DESC, r.rowid DESC LIMIT 1"
    ).fetchone()
    return str(row[0]) if row else None


def loop_names(conn: sqlite3.Connection, run_id: str) -> list[str]:
    """Loops of a run in run order (declared ones first, then any seen only in rows)."""
    names = [
        str(r[0])
        for r in conn.execute(
            "SELECT name FROM loops WHERE run_id = ? ORDER BY position, rowid", (run_id,)
        )
    ]
    seen = set(names)
    for (name,) in conn.execute(
        "SELECT loop FROM iterations WHERE run_id = ? UNION SELECT loop FROM ledger"
        " WHERE run_id = ? ORDER BY 1",
        (run_id, run_id),
    ):
        if name not in seen:
            seen.add(name)
            names.append(str(name))
    return names


def _require_run(conn: sqlite3.Connection, run_id: str) -> sqlite3.Row | tuple[Any, ...]:
    row = conn.execute(
        "SELECT started, coalesce(session_started, started), wall_before, config_hash"
        " FROM runs WHERE id = ?",
        (run_id,),
    ).fetchone()
    if row is None:
        raise JournalError(f"no run {run_id!r} in the journal")
    return row  # type: ignore[no-any-return]


# -- settling ----------------------------------------------------------------
@dataclass(slots=True)
class _Open:
    id: int
    iteration: int
    tokens: int
    usd: float
    used_tokens: int = 0
    used_usd: float = 0.0
    seen: bool = False


def open_reservations(rows: list[tuple[int, int, str, int, float, int | None]]) -> list[_Open]:
    """Reservations never released, from ledger rows (id, iteration, kind, tokens, usd,
    settles) in id order. A reserve row followed by another reserve row without a
    release in between was orphaned by a crash."""
    settled = {r[5] for r in rows if r[2] == "release" and r[5] is not None}
    current: _Open | None = None
    found: list[_Open] = []
    for row_id, iteration, kind, tokens, usd, settles in rows:
        if kind == "reserve":
            if current is not None and current.id not in settled:
                found.append(current)
            current = _Open(row_id, iteration, tokens, usd)
        elif kind == "charge":
            if settles is None and current is not None and (tokens > 0 or usd > 0):
                current.seen = True
                current.used_tokens += tokens
                current.used_usd += usd
        elif settles is None or (current is not None and settles == current.id):
            current = None
    if current is not None and current.id not in settled:
        found.append(current)
    return found


def _event_row(conn: sqlite3.Connection, run_id: str, data: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO events (run_id, loop, iteration, ts, type, json) VALUES (?, ?, ?, ?, ?, ?)",
        (run_id, data.get("loop"), data.get("iteration"), data["ts"], data["type"],
         json.dumps(data, default=str)),
    )  # fmt: skip


def settle(conn: sqlite3.Connection, run_id: str) -> int:
    """Write the settlement of what a crash left open; returns rows written (0: nothing)."""
    _require_run(conn, run_id)
    (crash_ts,) = conn.execute(
        "SELECT coalesce(max(ts), 0) FROM events WHERE run_id = ?", (run_id,)
    ).fetchone()
    written = 0
    for loop in loop_names(conn, run_id):
        written += _settle_reservations(conn, run_id, loop, float(crash_ts))
        written += _interrupt_in_flight(conn, run_id, loop, float(crash_ts))
    return written


def _settle_reservations(conn: sqlite3.Connection, run_id: str, loop: str, ts: float) -> int:
    rows = conn.execute(
        "SELECT id, iteration, kind, tokens, usd, settles FROM ledger"
        " WHERE run_id = ? AND loop = ? ORDER BY id",
        (run_id, loop),
    ).fetchall()
    insert = (
        "INSERT INTO ledger (run_id, loop, iteration, kind, tokens, usd, cpu_s, ts, settles, note)"
        " VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?)"
    )
    written = 0
    for res in open_reservations(rows):
        # The request never finished in the journal, so the provider may have billed
        # more than was seen (the Messages API reports output usage only at the end of
        # a stream; the last batch before a kill is lost). A hard budget charges the
        # whole reservation: what was seen (already charged, once) plus the unseen rest.
        rest_tokens = max(0, res.tokens - res.used_tokens)
        rest_usd = max(0.0, res.usd - res.used_usd)
        if res.seen:
            note = "crash: usage seen charged once; the unseen rest charged at the reservation"
            what = f"{res.used_tokens:,} tokens were seen, {rest_tokens:,} more"
        else:
            note = "crash: usage never seen; charged at the reservation"
            what = f"{rest_tokens:,} tokens"
        conn.execute(
            insert, (run_id, loop, res.iteration, "charge", rest_tokens, rest_usd, ts, res.id, note)
        )
        conn.execute(insert, (run_id, loop, res.iteration, "release", 0, 0.0, ts, res.id, note))
        message = (
            f"{what} (${rest_usd:.4f}) charged at the reservation of iteration "
            f"{res.iteration}: the supervisor stopped before the request's usage was complete"
        )
        _event_row(
            conn, run_id, Notice(loop=loop, level="warning", message=message, ts=ts).to_dict()
        )
        written += 3
    return written


def _interrupt_in_flight(conn: sqlite3.Connection, run_id: str, loop: str, ts: float) -> int:
    rows = conn.execute(
        "SELECT id, iteration, coalesce(start_seq, 0), started, session_id FROM iterations"
        " WHERE run_id = ? AND loop = ? AND outcome IS NULL ORDER BY id",
        (run_id, loop),
    ).fetchall()
    for row_id, iteration, start_seq, started, session_id in rows:
        (last_ts,) = conn.execute(
            "SELECT max(ts) FROM events WHERE run_id = ? AND loop = ? AND iteration = ?"
            " AND seq >= ?",
            (run_id, loop, iteration, start_seq),
        ).fetchone()
        ended = float(last_ts if last_ts is not None else started)
        tokens, usd = conn.execute(
            "SELECT coalesce(sum(tokens), 0), coalesce(sum(usd), 0.0) FROM ledger"
            " WHERE run_id = ? AND loop = ? AND iteration = ? AND kind = 'charge' AND ts >= ?",
            (run_id, loop, iteration, started),
        ).fetchone()
        conn.execute(
            "UPDATE iterations SET outcome = 'interrupted', reason = ?, ended = ?, tokens = ?,"
            " usd = ? WHERE id = ?",
            (INTERRUPTED_REASON, ended, tokens, usd, row_id),
        )
        finished = IterationFinished(
            loop=loop,
            iteration=iteration,
            outcome="interrupted",
            reason=INTERRUPTED_REASON,
            tokens=int(tokens),
            usd=float(usd),
            duration_s=max(0.0, ended - float(started)),
            session_id=session_id,
            ts=max(ts, ended),
        )
        _event_row(conn, run_id, finished.to_dict())
    return 2 * len(rows)


def reopen(
    conn: sqlite3.Connection,
    run_id: str,
    *,
    config_path: str | None,
    config_text: str | None,
    text_hash: str | None,
) -> int:
    """Carry the crashed session's wall time over and open a new session; 1 if the
    config text changed (recorded as a notice event)."""
    import time

    _, session_started, wall_before, old_hash = _require_run(conn, run_id)
    now = time.time()
    wall = float(wall_before) + _session_wall(conn, run_id, float(session_started))
    changed = text_hash is not None and text_hash != old_hash
    conn.execute(
        "UPDATE runs SET ended = NULL, exit_code = NULL, reason = NULL, wall_before = ?,"
        " session_started = ? WHERE id = ?",
        (wall, now, run_id),
    )
    if changed:
        conn.execute(
            "UPDATE runs SET config_path = coalesce(?, config_path), config_hash = ?,"
            " config_text = ? WHERE id = ?",
            (config_path, text_hash, config_text, run_id),
        )
        message = (
            "loops.toml changed since the run started; the new config applies from the"
            " next iteration"
        )
        _event_row(conn, run_id, Notice(message=message, ts=now).to_dict())
    conn.execute(
        "INSERT INTO resumes (run_id, ts, config_hash, config_changed) VALUES (?, ?, ?, ?)",
        (run_id, now, text_hash or old_hash, int(changed)),
    )
    return int(changed)


def _session_wall(conn: sqlite3.Connection, run_id: str, session_started: float) -> float:
    (last_ts,) = conn.execute(
        "SELECT max(ts) FROM events WHERE run_id = ? AND ts >= ?", (run_id, session_started)
    ).fetchone()
    return max(0.0, float(last_ts) - session_started) if last_ts is not None else 0.0


# -- loading -----------------------------------------------------------------
def load(conn: sqlite3.Connection, run_id: str) -> RunResume:
    _, session_started, wall_before, _ = _require_run(conn, run_id)
    loops: dict[str, LoopResume] = {}
    notes: list[str] = []
    for name in loop_names(conn, run_id):
        resume, usd_at_reservation = _load_loop(conn, run_id, name)
        loops[name] = resume
        if resume.charged_at_reservation:
            notes.append(
                f"{name}: {resume.charged_at_reservation:,} tokens (${usd_at_reservation:.4f})"
                " charged at the reservation: requests cut by the crash never reported all usage"
            )
        if resume.interrupted_iteration is not None:
            notes.append(
                f"{name}: iteration {resume.interrupted_iteration} was interrupted and runs again"
            )
    return RunResume(
        run_id=run_id,
        loops=loops,
        tokens=sum(r.tokens for r in loops.values()),
        usd=sum(r.usd for r in loops.values()),
        cpu_s=sum(r.cpu_s for r in loops.values()),
        wall_s=float(wall_before) + _session_wall(conn, run_id, float(session_started)),
        notes=tuple(notes),
        forks=tuple(run_new_loops(conn, run_id)),
        limits=run_limits(conn, run_id),
    )


def load_loop_resume(conn: sqlite3.Connection, run_id: str, name: str) -> LoopResume:
    """What the journal knows of one loop of a run (read-only: `status --json`)."""
    return _load_loop(conn, run_id, name)[0]


def _load_loop(conn: sqlite3.Connection, run_id: str, name: str) -> tuple[LoopResume, float]:
    key = (run_id, name)
    state_row = conn.execute(
        "SELECT state, reason, updated FROM loops WHERE run_id = ? AND name = ?", key
    ).fetchone()
    state, reason = (str(state_row[0]), str(state_row[1])) if state_row else ("pending", "")
    updated = state_row[2] if state_row else None
    restart_seq = -1
    for seq, kind, text in conn.execute(
        "SELECT seq, type, json FROM events WHERE run_id = ? AND loop = ?"
        " AND type IN ('control', ?)",
        (*key, SCHEDULED_RUN),
    ):
        if kind == SCHEDULED_RUN or json.loads(text).get("op") == "restart":
            restart_seq = max(restart_seq, int(seq))
    attempts = conn.execute(
        "SELECT iteration, outcome FROM iterations WHERE run_id = ? AND loop = ?"
        " AND coalesce(start_seq, 0) > ? ORDER BY id",
        (*key, restart_seq),
    ).fetchall()
    next_iteration, interrupted = 1, None
    if attempts:
        last_iteration, last_outcome = int(attempts[-1][0]), attempts[-1][1]
        again = last_outcome in ("interrupted", "error")
        next_iteration = last_iteration if again else last_iteration + 1
        interrupted = last_iteration if last_outcome == "interrupted" else None
    retries = sum(1 for _, outcome in attempts if outcome == "error")
    tokens, usd, cpu, res_tokens, res_usd = conn.execute(
        "SELECT coalesce(sum(tokens), 0), coalesce(sum(usd), 0.0), coalesce(sum(cpu_s), 0.0),"
        " coalesce(sum(CASE WHEN settles IS NOT NULL THEN tokens END), 0),"
        " coalesce(sum(CASE WHEN settles IS NOT NULL THEN usd END), 0.0)"
        " FROM ledger WHERE run_id = ? AND loop = ? AND kind = 'charge'",
        key,
    ).fetchone()
    session = _latest_event(conn, key, "session", restart_seq)
    checkpoint = _latest_event(conn, key, "checkpoint", restart_seq)
    if checkpoint:  # newer than the session's copy: written after the checks ran
        session["last_output"] = checkpoint.get("last_output", "")
        session["check_output"] = checkpoint.get("check_output", "")
    runs, last_run_at = _schedule_runs(conn, run_id, name)
    last_check, last_check_passed = _last_check(conn, run_id, name, restart_seq)
    (started,) = conn.execute(
        "SELECT min(ts) FROM events WHERE run_id = ? AND loop = ? AND seq > ?",
        (*key, restart_seq),
    ).fetchone()
    ended = updated if state in END_STATES else None
    landing, landing_succeeded = landing_state(conn, run_id, name, restart_seq)
    resume = LoopResume(
        name=name,
        state=state,
        reason=reason,
        next_iteration=next_iteration,
        tokens=int(tokens),
        usd=float(usd),
        cpu_s=float(cpu),
        retries_used=retries,
        session_id=session.get("session_id"),
        conversation=session.get("conversation"),
        last_output=str(session.get("last_output", "")),
        check_output=str(session.get("check_output", "")),
        notes=tuple(str(n) for n in checkpoint.get("notes", ())),
        detector=checkpoint.get("detector"),
        runs=runs,
        last_run_at=last_run_at,
        interrupted_iteration=interrupted,
        charged_at_reservation=int(res_tokens),
        last_check=last_check,
        last_check_passed=last_check_passed,
        started_at=None if started is None else float(started),
        ended_at=None if ended is None else float(ended),
        commits=_commits(conn, run_id, name),
        scores=_scores(conn, key, restart_seq),
        usage_wait_until=_usage_wait_until(_latest_event(conn, key, "state", restart_seq)),
        landing=landing,
        landing_succeeded=landing_succeeded,
        edit=loop_edit(conn, run_id, name),
    )
    return resume, float(res_usd)


def _commits(conn: sqlite3.Connection, run_id: str, name: str) -> tuple[str, ...]:
    if not has_commits(conn):
        return ()
    rows = conn.execute(
        "SELECT git_commit FROM iterations WHERE run_id = ? AND loop = ?"
        " AND git_commit IS NOT NULL ORDER BY id",
        (run_id, name),
    ).fetchall()
    return tuple(str(r[0]) for r in rows)


def _scores(
    conn: sqlite3.Connection, key: tuple[str, str], after_seq: int
) -> tuple[ScoreEntry, ...]:
    """A metric loop's judged iterations (`score.py`), from their `iteration_finished`
    events: the score, whether it was kept, and where that left the branch."""
    found: dict[int, ScoreEntry] = {}
    for (text,) in conn.execute(
        "SELECT json FROM events WHERE run_id = ? AND loop = ? AND type = 'iteration_finished'"
        " AND seq > ? AND json_extract(json, '$.kept') IS NOT NULL ORDER BY seq",
        (*key, after_seq),
    ):
        data = json_loads(text)
        kept = bool(data.get("kept"))
        head = data.get("commit") if kept else data.get("reverted_to")
        head = head or data.get("commit_parent")
        score = data.get("score")
        found[int(data["iteration"])] = ScoreEntry(
            int(data["iteration"]),
            None if score is None else float(score),
            kept,
            None if head is None else str(head),
        )
    return tuple(found.values())


def _last_check(
    conn: sqlite3.Connection, run_id: str, name: str, restart_seq: int
) -> tuple[str | None, bool | None]:
    """The check line of the last iteration that ran checks (since the last restart)."""
    rows = conn.execute(
        "SELECT iteration, json FROM events WHERE run_id = ? AND loop = ? AND type = 'check'"
        " AND seq > ? ORDER BY seq",
        (run_id, name, restart_seq),
    ).fetchall()
    if not rows:
        return None, None
    last = rows[-1][0]
    results = []
    for iteration, text in rows:
        if iteration == last:
            data = json.loads(text)
            results.append(
                (str(data.get("name")), bool(data.get("passed")), str(data.get("summary")))
            )
    return check_summary(results)


def _usage_wait_until(state: dict[str, Any]) -> float | None:
    """The end of the usage-limit wait a loop's last state shows (None: not waiting)."""
    if state.get("state") != "waiting" or state.get("cause") != "usage_limit":
        return None
    wait = state.get("wait_seconds")
    return None if wait is None else float(state["ts"]) + float(wait)


def _latest_event(
    conn: sqlite3.Connection, key: tuple[str, str], kind: str, after_seq: int
) -> dict[str, Any]:
    """The newest `kind` event of a loop after `after_seq` (a restart), as a dict."""
    row = conn.execute(
        "SELECT json FROM events WHERE run_id = ? AND loop = ? AND type = ? AND seq > ?"
        " ORDER BY seq DESC LIMIT 1",
        (*key, kind, after_seq),
    ).fetchone()
    return {} if row is None else dict(json_loads(row[0]))


def _schedule_runs(conn: sqlite3.Connection, run_id: str, name: str) -> tuple[int, float | None]:
    row = conn.execute(
        "SELECT ts, json FROM events WHERE run_id = ? AND loop = ? AND type = ?"
        " ORDER BY seq DESC LIMIT 1",
        (run_id, name, SCHEDULED_RUN),
    ).fetchone()
    if row is None:
        return 0, None
    return int(json.loads(row[1]).get("run", 0)), float(row[0])
