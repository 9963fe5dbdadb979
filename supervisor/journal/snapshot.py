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
from supervisor.events import ATTENTION_STATES, LoopForked
from supervisor.journal.forks import run_forks
from supervisor.journal.settle import load_loop_resume
from supervisor.score import snapshot_fields
from supervisor.spec import Limits

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
    records = {fork.loop: fork for fork in run_forks(conn, run.run_id)}
    forked = {name: fork.label for name, fork in records.items()}
    loops = tuple(
        _loop(conn, run, row, _spec_of(specs, records, row.loop), agents, forked.get(row.loop, ""))
        for row in rows
    )
    supervisor = config.get("supervisor", {}) if isinstance(config.get("supervisor"), dict) else {}
    ended = run.ended
    snapshot = RunSnapshot(
        run_id=run.run_id,
        config_path=run.config_path,
        started_at=run.started,
        finished=ended is not None,
        loops=loops,
        budget=BudgetSnapshot(
            limits=_limits(supervisor.get("budget")),
            tokens=sum(r.tokens for r in rows),
            usd=round(sum(r.usd for r in rows), 6),
            cpu_s=round(sum(r.cpu_s for r in rows), 3),
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


def _spec_of(
    specs: dict[str, dict[str, Any]], forks: dict[str, LoopForked], loop: str
) -> dict[str, Any]:
    """The loop's spec as journalled; a fork's is its parent's with its own prompt
    when it was given one (`--prompt-file`), as `fork.fork_spec` makes it."""
    seen: set[str] = set()
    prompt: str | None = None
    while not specs.get(loop) and loop in forks and loop not in seen:
        seen.add(loop)
        if prompt is None:
            prompt = forks[loop].prompt
        loop = forks[loop].parent
    spec = specs.get(loop) or {}
    return spec if prompt is None else {**spec, "prompt": prompt}


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
