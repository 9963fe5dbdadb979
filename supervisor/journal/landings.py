"""Where a loop's `on_success` landing stands, from its journal records.

`landing_started` is written before a succeeded loop lands its branch and
`landing_finished` once that is settled (done, or given up by the operator). A run
killed in between is resumed with the landing still to do: `landing.Landing.owed`
decides, and landing again is idempotent (`land.land_outcome`).
"""

from __future__ import annotations

import json
import sqlite3

from supervisor.events import LandingFinished, LandingStarted


def landing_state(
    conn: sqlite3.Connection, run_id: str, loop: str, after_seq: int
) -> tuple[str, str]:
    """("started", why the loop succeeded), ("finished", "") or ("", "") when no
    landing began after `after_seq` (the loop's last restart)."""
    row = conn.execute(
        "SELECT type, json FROM events WHERE run_id = ? AND loop = ? AND type IN (?, ?)"
        " AND seq > ? ORDER BY seq DESC LIMIT 1",
        (run_id, loop, LandingStarted.type, LandingFinished.type, after_seq),
    ).fetchone()
    if row is None:
        return "", ""
    if row[0] == LandingFinished.type:
        return "finished", ""
    return "started", str(json.loads(row[1]).get("succeeded", ""))
