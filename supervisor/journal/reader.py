"""Reading the journal: runs, iterations, transcripts and status (as text: `formats`).

`JournalReader` opens its own read-only connection (`mode=ro`), so `loopvisor
history` / `status` and the TUI's scrollback work while a live supervisor writes
(WAL readers never block the writer nor see half a batch).

Conventions: times are epoch seconds (float, like every `ts` in loopvisor's
JSON-lines output); `run_id=None` means the newest run (for a loop: the newest
run that has it). An iteration without an outcome is `None` ("running") while its
run is live, and reads as `interrupted` once the supervisor is gone (resume
writes that outcome for good). Attempts of one iteration number (an interrupted
one and its re-run, or agent-error retries) are separate rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from supervisor.events import LoopAdded, LoopForked
from supervisor.journal import forks
from supervisor.journal.forks import ForkPoint
from supervisor.journal.render import history_dict, render_transcript, transcript_lines
from supervisor.journal.schema import JOURNAL_NAME, JournalError, connect_reader, has_commits
from supervisor.journal.snapshot import attempt_dicts, snapshot_dict
from supervisor.journal.statelock import lock_holder
from supervisor.lines import TranscriptLine
from supervisor.textsafe import json_loads

GONE_REASON = "interrupted: the supervisor is gone; `loopvisor run --resume` re-runs it"
_TRANSCRIPT_TYPES = (
    "output", "iteration_started", "iteration_finished", "tool_call", "tool_result",
    "check_started", "check", "stuck", "control", "notice", "output_truncated",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RunRow:
    run_id: str
    config_path: str
    started: float
    ended: float | None
    exit_code: int | None
    reason: str
    loops: tuple[str, ...]
    tokens: int
    usd: float
    live: bool
    """A supervisor holds the state dir and this run has not ended."""


@dataclass(frozen=True, slots=True)
class IterationRow:
    run_id: str
    loop: str
    iteration: int
    attempt: int
    outcome: str | None
    """None while the iteration runs; "interrupted" when its supervisor died."""
    reason: str
    tokens: int
    usd: float
    started: float
    ended: float | None
    session_id: str | None
    commit: str | None = None
    """Its checkpoint commit (a worktree loop that changed something: `checkpoint.py`)."""
    parent: str | None = None
    """The branch's HEAD when it began: its diff is parent..commit."""
    score: float | None = None
    """A metric loop's score of this attempt (`score.py`)."""
    kept: bool | None = None
    """A metric loop: whether it improved on the best (False: reverted); None otherwise."""

    @property
    def duration_s(self) -> float | None:
        return None if self.ended is None else max(0.0, self.ended - self.started)


@dataclass(frozen=True, slots=True)
class LoopStatusRow:
    loop: str
    state: str
    reason: str
    iteration: int
    tokens: int
    usd: float
    cpu_s: float
    best_score: float | None = None
    """A metric loop's best score (its last kept iteration's)."""
    attempt_of: str = ""
    """A race's attempt: the race loop's name (whose row also counts this one's spending)."""


def _with_attempts(row: LoopStatusRow, rows: list[LoopStatusRow]) -> LoopStatusRow:
    """A race loop's row spends what its attempts spent (its own ledger is their
    parent: it is charged nothing itself)."""
    attempts = [r for r in rows if r.attempt_of == row.loop]
    if not attempts:
        return row
    return replace(
        row,
        tokens=row.tokens + sum(a.tokens for a in attempts),
        usd=row.usd + sum(a.usd for a in attempts),
        cpu_s=row.cpu_s + sum(a.cpu_s for a in attempts),
    )


class IterationDetail(NamedTuple):
    prompt: str
    """The prompt as sent (of the latest attempt)."""
    transcript: str
    """Agent text, tool calls and check results in order (all attempts)."""


@dataclass(frozen=True, slots=True)
class TranscriptPage:
    lines: tuple[str, ...]
    before_seq: int | None
    """Pass as `before_seq` for the next older page; None when the start was reached."""


class JournalReader:
    """Read-only view of `STATE_DIR/journal.sqlite3`; safe beside a live writer."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / JOURNAL_NAME
        self._conn = connect_reader(self.path)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path}: cannot read: {exc}") from exc

    # -- runs ----------------------------------------------------------------
    def runs(self, limit: int | None = None) -> list[RunRow]:
        """Runs, newest first."""
        rows = self._query(
            "SELECT id, config_path, started, ended, exit_code, coalesce(reason, '') FROM runs"
            " ORDER BY started DESC, rowid DESC LIMIT ?",
            (-1 if limit is None else limit,),
        )
        live = self._live_run_id() if rows else None
        return [self._run_row(r, live) for r in rows]

    def latest_run(self) -> RunRow | None:
        runs = self.runs(limit=1)
        return runs[0] if runs else None

    def run(self, run_id: str) -> RunRow:
        rows = self._query(
            "SELECT id, config_path, started, ended, exit_code, coalesce(reason, '') FROM runs"
            " WHERE id = ?",
            (run_id,),
        )
        if not rows:
            raise JournalError(f"no run {run_id!r} in {self.path}")
        return self._run_row(rows[0], self._live_run_id())

    def _live_run_id(self) -> str | None:
        """The run a live supervisor is writing: the unended one started or resumed last."""
        if lock_holder(self.state_dir) is None:
            return None
        rows = self._query(
            "SELECT id FROM runs WHERE ended IS NULL"
            " ORDER BY coalesce(session_started, started) DESC, rowid DESC LIMIT 1"
        )
        return str(rows[0][0]) if rows else None

    def _run_row(self, row: Any, live_run_id: str | None) -> RunRow:
        run_id = str(row[0])
        names = [r[0] for r in self._query(
            "SELECT name FROM loops WHERE run_id = ? ORDER BY position, rowid", (run_id,)
        )]  # fmt: skip
        tokens, usd = self._query(
            "SELECT coalesce(sum(tokens), 0), coalesce(sum(usd), 0.0) FROM ledger"
            " WHERE run_id = ? AND kind = 'charge'",
            (run_id,),
        )[0]
        return RunRow(
            run_id=run_id,
            config_path=str(row[1]),
            started=float(row[2]),
            ended=row[3],
            exit_code=row[4],
            reason=str(row[5]),
            loops=tuple(names),
            tokens=int(tokens),
            usd=float(usd),
            live=run_id == live_run_id,
        )

    def _run_for_loop(self, loop: str, run_id: str | None) -> RunRow:
        if run_id is not None:
            return self.run(run_id)
        rows = self._query(
            "SELECT r.id FROM runs r WHERE EXISTS (SELECT 1 FROM loops l WHERE l.run_id = r.id"
            " AND l.name = ?) OR EXISTS (SELECT 1 FROM iterations i WHERE i.run_id = r.id AND"
            " i.loop = ?) ORDER BY r.started DESC, r.rowid DESC LIMIT 1",
            (loop, loop),
        )
        if not rows:
            known = sorted({r[0] for r in self._query("SELECT DISTINCT name FROM loops")})
            hint = f" (known: {', '.join(known)})" if known else ""
            raise JournalError(f"no loop named {loop!r} in the journal{hint}")
        return self.run(str(rows[0][0]))

    # -- iterations ----------------------------------------------------------
    def loop_iterations(self, loop: str, run_id: str | None = None) -> list[IterationRow]:
        """Every attempt of every iteration of `loop`, in the order they started."""
        run = self._run_for_loop(loop, run_id)
        commits = "git_commit, git_parent" if has_commits(self._conn) else "NULL, NULL"
        rows = self._query(
            "SELECT iteration, attempt, outcome, reason, tokens, usd, started, ended, session_id,"
            f" {commits} FROM iterations WHERE run_id = ? AND loop = ? ORDER BY id",
            (run.run_id, loop),
        )
        result: list[IterationRow] = []
        for it, attempt, outcome, reason, tokens, usd, started, ended, session, *git in rows:
            if outcome is None and not run.live:
                outcome, reason = "interrupted", GONE_REASON
            result.append(IterationRow(
                run.run_id, loop, int(it), int(attempt), outcome, str(reason), int(tokens),
                float(usd), float(started), ended, session, *git,
            ))  # fmt: skip
        return self._with_scores(result, run.run_id, loop)

    def _with_scores(self, rows: list[IterationRow], run_id: str, loop: str) -> list[IterationRow]:
        """A metric loop's scores, from its `iteration_finished` events (they are not
        columns of `iterations`): each goes to its iteration's latest attempt."""
        scores = {
            int(it): (score, kept)
            for it, score, kept in self._query(
                "SELECT iteration, json_extract(json, '$.score'), json_extract(json, '$.kept')"
                " FROM events WHERE run_id = ? AND loop = ? AND type = 'iteration_finished'"
                " AND json_extract(json, '$.kept') IS NOT NULL ORDER BY seq",
                (run_id, loop),
            )
        }
        if not scores:
            return rows
        latest = {row.iteration: i for i, row in enumerate(rows)}
        for it, (score, kept) in scores.items():
            if it in latest:
                i = latest[it]
                rows[i] = replace(rows[i], score=score, kept=bool(kept))
        return rows

    def iteration_commit(
        self, loop: str, iteration: int, run_id: str | None = None
    ) -> IterationRow | None:
        """The latest attempt of iteration `iteration` that made a checkpoint commit
        (None: it changed nothing, or ran before checkpoints). JournalError when the
        loop has no such iteration."""
        rows = [r for r in self.loop_iterations(loop, run_id) if r.iteration == iteration]
        if not rows:
            run = self._run_for_loop(loop, run_id)
            raise JournalError(f"loop {loop!r} has no iteration {iteration} in run {run.run_id}")
        return next((r for r in reversed(rows) if r.commit), None)

    def loop_charged(self, loop: str, run_id: str | None = None) -> tuple[int, float]:
        """(tokens, USD) the ledger charged `loop` in the run: every turn, step-in chat
        included (the iterations' own totals leave the operator's chat out)."""
        run = self._run_for_loop(loop, run_id)
        rows = self._query(
            "SELECT coalesce(sum(tokens), 0), coalesce(sum(usd), 0.0) FROM ledger"
            " WHERE run_id = ? AND loop = ? AND kind = 'charge'",
            (run.run_id, loop),
        )
        tokens, usd = rows[0] if rows else (0, 0.0)
        return int(tokens), float(usd)

    def iteration_detail(
        self, loop: str, iteration: int, run_id: str | None = None
    ) -> IterationDetail:
        run = self._run_for_loop(loop, run_id)
        prompts = self._query(
            "SELECT prompt FROM iterations WHERE run_id = ? AND loop = ? AND iteration = ?"
            " ORDER BY attempt DESC LIMIT 1",
            (run.run_id, loop, iteration),
        )
        if not prompts:
            raise JournalError(f"loop {loop!r} has no iteration {iteration} in run {run.run_id}")
        text = render_transcript(self._iteration_events(run.run_id, loop, iteration), verbose=True)
        return IterationDetail(str(prompts[0][0]), text)

    def iteration_lines(
        self, loop: str, iteration: int, run_id: str | None = None
    ) -> list[TranscriptLine]:
        """`iteration_detail`'s transcript as lines, each with its kind (for the console)."""
        run = self._run_for_loop(loop, run_id)
        return transcript_lines(self._iteration_events(run.run_id, loop, iteration), verbose=True)

    def _iteration_events(self, run_id: str, loop: str, iteration: int) -> list[dict[str, Any]]:
        marks = ", ".join("?" * len(_TRANSCRIPT_TYPES))
        rows = self._query(
            f"SELECT json FROM events WHERE run_id = ? AND loop = ? AND iteration = ?"
            f" AND type IN ({marks}) ORDER BY seq",
            (run_id, loop, iteration, *_TRANSCRIPT_TYPES),
        )
        return [json_loads(r[0]) for r in rows]

    def iteration_checks(
        self, loop: str, iteration: int, run_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The `check` events of one iteration (every attempt), oldest first."""
        run = self._run_for_loop(loop, run_id)
        rows = self._query(
            "SELECT json FROM events WHERE run_id = ? AND loop = ? AND iteration = ?"
            " AND type = 'check' ORDER BY seq",
            (run.run_id, loop, iteration),
        )
        return [json_loads(r[0]) for r in rows]

    # -- transcript scrollback -----------------------------------------------
    def transcript_page(
        self,
        loop: str,
        *,
        before_seq: int | None = None,
        limit: int = 500,
        run_id: str | None = None,
    ) -> TranscriptPage:
        """At least `limit` lines (whole events, starting at a line start) before `before_seq`."""
        run = self._run_for_loop(loop, run_id)
        marks = ", ".join("?" * len(_TRANSCRIPT_TYPES))
        sql = (
            f"SELECT seq, json FROM events WHERE run_id = ? AND loop = ? AND seq < ?"
            f" AND type IN ({marks}) ORDER BY seq DESC LIMIT 256"
        )
        cursor = before_seq if before_seq is not None else 1 << 62
        picked: list[dict[str, Any]] = []
        lines, exhausted, extra = 0, False, 0
        while True:
            rows = self._query(sql, (run.run_id, loop, cursor, *_TRANSCRIPT_TYPES))
            if not rows:
                exhausted = True
                break
            done = False
            for seq, text in rows:
                data = json_loads(text)
                mid_line = data["type"] == "output" and not str(data.get("text", "")).endswith("\n")
                if lines >= limit and (not mid_line or extra >= 1000):
                    done = True
                    break
                if lines >= limit:
                    extra += 1
                data["_seq"] = seq
                picked.append(data)
                lines += max(1, str(data.get("text", "")).count("\n"))
                cursor = seq
            if done:
                break
        picked.reverse()
        text = render_transcript(picked)
        out = text.split("\n")
        if out and out[-1] == "":
            out.pop()
        first = int(picked[0]["_seq"]) if picked and not exhausted else None
        return TranscriptPage(tuple(out), first)

    def transcript(
        self,
        loop: str,
        *,
        before_seq: int | None = None,
        limit: int = 500,
        run_id: str | None = None,
    ) -> list[str]:
        """The last `limit` transcript lines of `loop` before `before_seq` (all: None)."""
        page = self.transcript_page(loop, before_seq=before_seq, limit=limit, run_id=run_id)
        return list(page.lines[-limit:]) if limit > 0 else []

    # -- status ---------------------------------------------------------------
    def status(self, run_id: str | None = None) -> list[LoopStatusRow]:
        """Each loop of the run (default: the newest) with its last state and spending."""
        run = self.run(run_id) if run_id is not None else self.latest_run()
        if run is None:
            return []
        rows = self._query(
            "SELECT l.name, l.state, l.reason, l.iteration,"
            " coalesce(sum(g.tokens), 0), coalesce(sum(g.usd), 0.0), coalesce(sum(g.cpu_s), 0.0)"
            " FROM loops l LEFT JOIN ledger g ON g.run_id = l.run_id AND g.loop = l.name"
            " AND g.kind = 'charge' WHERE l.run_id = ? GROUP BY l.name"
            " ORDER BY l.position, l.rowid",
            (run.run_id,),
        )
        best = {
            str(loop): float(score)
            for loop, score in self._query(
                "SELECT loop, json_extract(json, '$.score') FROM events WHERE run_id = ?"
                " AND type = 'iteration_finished' AND json_extract(json, '$.kept') = 1"
                " ORDER BY seq",
                (run.run_id,),
            )
            if score is not None
        }  # a kept iteration improved on every one before it: the last is the best
        race_of = {
            str(loop): str(race)
            for loop, race in self._query(
                "SELECT name, json_extract(spec, '$.attempt_of') FROM loops WHERE run_id = ?"
                " AND json_extract(spec, '$.attempt_of') IS NOT NULL",
                (run.run_id,),
            )
        }
        out = [
            LoopStatusRow(
                str(n),
                str(s),
                str(r),
                int(i),
                int(t),
                float(u),
                float(c),
                best.get(n),
                race_of.get(str(n), ""),
            )
            for n, s, r, i, t, u, c in rows
        ]
        return [_with_attempts(row, out) for row in out]

    def fork_point(self, loop: str, iteration: int, run_id: str) -> ForkPoint | None:
        """`loop` at the end of `iteration` (`forks.fork_point`); None: no such iteration."""
        try:
            return forks.fork_point(self._conn, run_id, loop, iteration)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path}: cannot read: {exc}") from exc

    def latest_new_loop(self, loop: str) -> LoopForked | LoopAdded | None:
        """The newest record of a loop named `loop` that a run forked or added
        (`forks.latest_new_loop`)."""
        try:
            return forks.latest_new_loop(self._conn, loop)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path}: cannot read: {exc}") from exc

    def parents(self, run_id: str) -> dict[str, str]:
        """{fork: "PARENT@N"} of the run's forks."""
        try:
            return forks.parents(self._conn, run_id)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path}: cannot read: {exc}") from exc

    def history_json(self, loop: str, run_id: str | None = None) -> dict[str, Any]:
        """`history LOOP --json`; a race loop's (which runs no iteration itself) adds
        "attempts", each with its outcome and cost, and its total is theirs."""
        rows = self.loop_iterations(loop, run_id)
        data = history_dict(loop, rows, self.loop_charged(loop, run_id) if rows else None)
        run = self.run(run_id) if run_id is not None else self.latest_run()
        attempts = attempt_dicts(loop, self.status(run.run_id) if run else [])
        if attempts:
            data["attempts"] = attempts
            data["total"] = {
                "tokens": data["total"]["tokens"] + sum(a["tokens"] for a in attempts),
                "usd": round(data["total"]["usd"] + sum(a["usd"] for a in attempts), 6),
            }
        return data

    def status_json(self, run_id: str | None = None) -> dict[str, Any]:
        """`status --json`: the live snapshot's shape (`journal_snapshot`)."""
        run = self.run(run_id) if run_id is not None else self.latest_run()
        rows = self.status(run.run_id) if run else []
        try:
            return snapshot_dict(self._conn, run, rows)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path}: cannot read: {exc}") from exc
