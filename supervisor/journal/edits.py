"""The operator's edits a run journalled, as state: a loop's edits folded into one
(`events.LoopEdited`: the newest value of each key) and the run's global limits as
the last `budget` op set them (`events.BudgetChanged`).

`settle.load` hands them to `--resume` (the runtime applies them over the config's
specs, `spec.edited`) and `snapshot` shows them in `status --json`, so the two read
them in one place. A loop's edits are kept across its restarts: restarting a loop
starts its iterations again, not its configuration.
"""

from __future__ import annotations

import sqlite3

from supervisor.events import BudgetChanged, LoopEdited, event_from_dict
from supervisor.spec import Limits
from supervisor.textsafe import json_loads


def loop_edit(conn: sqlite3.Connection, run_id: str, loop: str) -> LoopEdited | None:
    """Every edit of `loop` in run `run_id`, folded in order (None: never edited)."""
    folded: LoopEdited | None = None
    for (text,) in conn.execute(
        "SELECT json FROM events WHERE run_id = ? AND loop = ? AND type = ? ORDER BY seq",
        (run_id, loop, LoopEdited.type),
    ):
        event = event_from_dict(dict(json_loads(text)))
        if isinstance(event, LoopEdited):
            folded = event if folded is None else folded.then(event)
    return folded


def run_limits(conn: sqlite3.Connection, run_id: str) -> Limits | None:
    """The global limits the operator last set in run `run_id` (None: never changed)."""
    row = conn.execute(
        "SELECT json FROM events WHERE run_id = ? AND loop IS NULL AND type = ?"
        " ORDER BY seq DESC LIMIT 1",
        (run_id, BudgetChanged.type),
    ).fetchone()
    event = None if row is None else event_from_dict(dict(json_loads(row[0])))
    return Limits.from_dict(event.limits) if isinstance(event, BudgetChanged) else None
