"""`loopvisor status --json`: a run read from the journal, in the live snapshot's shape.

`ctl status --json` prints what a serving supervisor knows (`api.RunSnapshot`);
`status --json` reads the journal of a run that may be live, crashed or long over.
Both print the same object, so a script written against one works on the other:
the run (`run_id`, `config_path`, `started_at`, `finished`, `exit_code`,
`end_reason`, `ended_at`, `live`: whether a supervisor still holds the state dir),
every loop as an `api.LoopSnapshot` (state, iteration, spend, limits, last check,
times) and the global `budget`.
What only a running supervisor has (reservations, slots in use, transcript tails,
retry waits) reads as zero or empty.
"""

from __future__ import annotations

import json
import sqlite3
import time
import tomllib
from typing import TYPE_CHECKING, Any

from supervisor.api import BudgetSnapshot, LoopSnapshot, RunSnapshot
from supervisor.durations import parse_duration
from supervisor.events import ATTENTION_STATES, LoopAdded, LoopEdited, LoopForked
from supervisor.journal.edits import loop_edit, run_limits
from supervisor.journal.forks import run_new_loops
from supervisor.journal.settle import load_loop_resume
from supervisor.score import snapshot_fields
from supervisor.spec import Limits

LINEAGE_MAX = 50
"""Forks of forks (or loops added like added loops) deeper than this are a journal
that loops, not a lineage."""

if TYPE_CHECKING:
    from supervisor.journal.reader import LoopStatusRow, RunRow


def snapshot_dict(
    conn: sqlite3.Connection, run: RunRow | None, rows: list[LoopStatusRow]
) -> dict[str, Any]:
    """The `status --json` object of `run` (every field null or empty when there is none)."""
    if run is None:
        return {"run_id": None, "loops": [], "live": False, "ended_at": None}
    text_row = conn.execute("SELECT config_text FROM runs WHERE id = ?", (run.run_id,)).fetchone()
    config = _toml(str(text_row[0]) if text_row and text_row[0] else "")
    specs = {
        str(name): json.loads(spec) if spec else {}
        for name, spec in conn.execute(
            "SELECT name, spec FROM loops WHERE run_id = ?", (run.run_id,)
        )
    }
    agents = config.get("agents", {}) if isinstance(config.get("agents"), dict) else {}
    records = {made.loop: made for made in run_new_loops(conn, run.run_id)}
    forked = {name: r.label for name, r in records.items() if isinstance(r, LoopForked)}
    loops = tuple(
        _loop(
            conn,
            run,
            row,
            _edited(_spec_of(specs, records, row.loop), loop_edit(conn, run.run_id, row.loop)),
            agents,
            forked.get(row.loop, ""),
        )
        for row in rows
    )
    supervisor = config.get("supervisor", {}) if isinstance(config.get("supervisor"), dict) else {}
    own = [r for r in rows if not any(a.attempt_of == r.loop for a in rows)]
    """The run's spending, loop by loop once: a race's row repeats its attempts'."""
    ended = run.ended
    snapshot = RunSnapshot(
        run_id=run.run_id,
        config_path=run.config_path,
        started_at=run.started,
        finished=ended is not None,
        loops=loops,
        budget=BudgetSnapshot(
            limits=run_limits(conn, run.run_id) or _limits(supervisor.get("budget")),
            tokens=sum(r.tokens for r in own),
            usd=round(sum(r.usd for r in own), 6),
            cpu_s=round(sum(r.cpu_s for r in own), 3),
            wall_s=round((ended if ended is not None else time.time()) - run.started, 3),
            tokens_reserved=0,
            usd_reserved=0.0,
            slots_in_use=0,
            slots_total=int(supervisor.get("max_concurrent", 4)),
        ),
        exit_code=run.exit_code,
        end_reason=run.reason,
        ended_at=ended,
        live=run.live,
    )
    return snapshot.to_dict()


def attempt_dicts(race: str, rows: list[LoopStatusRow]) -> list[dict[str, Any]]:
    """A race's attempts as JSON: name, state, reason, tokens, usd (none: not a race)."""
    return [
        {
            "name": r.loop,
            "state": r.state,
            "reason": r.reason,
            "tokens": r.tokens,
            "usd": round(r.usd, 6),
        }
        for r in rows
        if r.attempt_of == race
    ]


def _spec_of(
    specs: dict[str, dict[str, Any]],
    records: dict[str, LoopForked | LoopAdded],
    loop: str,
    depth: int = 0,
) -> dict[str, Any]:
    """The loop's spec as journalled. A fork's is its parent's with its own prompt when
    it was given one (`--prompt-file`), as `fork.fork_spec` makes it; an added loop's
    is its like-loop's with its own prompt, max_iterations and limits (`added.py`)."""
    spec = specs.get(loop)
    if spec or loop not in records or depth > LINEAGE_MAX:
        return spec or {}
    record = records[loop]
    if isinstance(record, LoopForked):
        base = _spec_of(specs, records, record.parent, depth + 1)
        return base if record.prompt is None else {**base, "prompt": record.prompt}
    base = _spec_of(specs, records, record.like, depth + 1)
    budget = base.get("budget")
    return {
        **base,
        "prompt": record.prompt,
        "max_iterations": record.max_iterations,
        "budget": {**(budget if isinstance(budget, dict) else {}), "limits": record.limits},
    }


def _edited(spec: dict[str, Any], edit: LoopEdited | None) -> dict[str, Any]:
    """The spec's JSON with the operator's edits (`journal.edits`) over it."""
    if edit is None:
        return spec
    spec = dict(spec)
    if edit.prompt is not None:
        spec["prompt"] = edit.prompt
    if edit.max_iterations is not None:
        spec["max_iterations"] = edit.max_iterations
    if edit.limits is not None:
        budget = spec.get("budget")
        spec["budget"] = {**(budget if isinstance(budget, dict) else {}), "limits": edit.limits}
    return spec


def _loop(
    conn: sqlite3.Connection,
    run: RunRow,
    row: LoopStatusRow,
    spec: dict[str, Any],
    agents: dict[str, Any],
    forked_from: str = "",
) -> LoopSnapshot:
    resume = load_loop_resume(conn, run.run_id, row.loop)
    raw_budget = spec.get("budget")
    budget: dict[str, Any] = raw_budget if isinstance(raw_budget, dict) else {}
    agent = str(spec.get("agent", ""))
    agent_table = agents.get(agent, {})
    started = resume.started_at
    until = resume.ended_at if resume.ended_at is not None else (time.time() if run.live else None)
    return LoopSnapshot(
        name=row.loop,
        agent=agent,
        agent_kind=str(agent_table.get("kind", "")) if isinstance(agent_table, dict) else "",
        state=row.state,
        reason=row.reason,
        iteration=row.iteration,
        max_iterations=int(spec.get("max_iterations", 0)),
        tokens=row.tokens,
        usd=round(row.usd, 6),
        cpu_s=round(row.cpu_s, 3),
        limits=_limits(budget.get("limits")),
        retries_used=resume.retries_used,
        retries=int(budget.get("retries", 0)),
        started_at=started,
        elapsed_s=0.0 if started is None or until is None else round(until - started, 3),
        last_check=resume.last_check,
        last_check_passed=resume.last_check_passed,
        attention=row.state in ATTENTION_STATES,
        evidence=row.reason if row.state == "stuck" else "",
        session_id=resume.session_id,
        prompt=str(spec.get("prompt", "")),
        wait_seconds=None,
        next_run=None,
        forked_from=forked_from,
        attempt_of=row.attempt_of or "",
        **snapshot_fields(resume.scores),
    )


def _limits(data: object) -> Limits:
    """Limits from a spec's JSON (numbers) or from loops.toml (durations as text)."""
    if not isinstance(data, dict):
        return Limits()
    values: dict[str, Any] = {}
    for key, kind in (("tokens", int), ("usd", float), ("wall", None), ("cpu", None)):
        value = data.get(key)
        if value is None:
            continue
        try:
            values[key] = parse_duration(value) if kind is None else kind(value)
        except (TypeError, ValueError):
            continue
    return Limits(**values)


def _toml(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {}
