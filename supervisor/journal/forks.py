"""What the journal keeps that a fork needs (`supervisor/fork.py`): a loop's state at
the end of one iteration, and the forks a run made (so `--resume` rebuilds them).

The state after iteration N is read from what that iteration journalled: its latest
attempt (outcome), the newest checkpoint commit made up to its end (the branch's tip
then: an iteration that changed nothing leaves the tip where the one before put it),
its `session` event (the agent's session id and where it stood, and, for API agents,
the messages) and
its `checkpoint` event (`$last_output`, `$check_output`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from supervisor.events import LoopAdded, LoopForked, event_from_dict
from supervisor.journal.schema import has_commits
from supervisor.textsafe import json_loads


@dataclass(frozen=True, slots=True)
class ForkPoint:
    """A loop as it was at the end of its iteration `iteration`."""

    loop: str
    iteration: int
    outcome: str | None
    """Of the iteration's latest attempt; None while it runs."""
    commit: str | None
    """The newest checkpoint commit made up to the iteration's end (None: none yet)."""
    session_id: str | None = None
    conversation: list[dict[str, Any]] | None = None
    last_output: str = ""
    check_output: str = ""
    session_at: str | None = None
    """Claude Code: the session's last message of the iteration (None: not journalled)."""


def fork_point(
    conn: sqlite3.Connection, run_id: str, loop: str, iteration: int
) -> ForkPoint | None:
    """The loop at the end of `iteration` in run `run_id`; None: no such iteration."""
    key = (run_id, loop)
    row = conn.execute(
        "SELECT id, outcome, coalesce(start_seq, 0) FROM iterations"
        " WHERE run_id = ? AND loop = ? AND iteration = ? ORDER BY id DESC LIMIT 1",
        (*key, iteration),
    ).fetchone()
    if row is None:
        return None
    row_id, outcome, start_seq = int(row[0]), row[1], int(row[2])
    commit = None
    if has_commits(conn):
        found = conn.execute(
            "SELECT git_commit FROM iterations WHERE run_id = ? AND loop = ? AND id <= ?"
            " AND git_commit IS NOT NULL ORDER BY id DESC LIMIT 1",
            (*key, row_id),
        ).fetchone()
        commit = str(found[0]) if found else None
    session = _event(conn, key, "session", iteration, start_seq)
    checkpoint = _event(conn, key, "checkpoint", iteration, start_seq)
    conversation = session.get("conversation")
    return ForkPoint(
        loop=loop,
        iteration=iteration,
        outcome=None if outcome is None else str(outcome),
        commit=commit,
        session_id=session.get("session_id"),
        session_at=session.get("session_at") or None,
        conversation=conversation if isinstance(conversation, list) else None,
        last_output=str(checkpoint.get("last_output", session.get("last_output", ""))),
        check_output=str(checkpoint.get("check_output", session.get("check_output", ""))),
    )


def _event(
    conn: sqlite3.Connection, key: tuple[str, str], kind: str, iteration: int, after_seq: int
) -> dict[str, Any]:
    row = conn.execute(
        "SELECT json FROM events WHERE run_id = ? AND loop = ? AND type = ? AND iteration = ?"
        " AND seq >= ? ORDER BY seq DESC LIMIT 1",
        (*key, kind, iteration, after_seq),
    ).fetchone()
    return {} if row is None else dict(json_loads(row[0]))


def run_forks(conn: sqlite3.Connection, run_id: str) -> list[LoopForked]:
    """The forks run `run_id` made, in the order it made them."""
    forks = []
    for (text,) in conn.execute(
        "SELECT json FROM events WHERE run_id = ? AND type = ? ORDER BY seq",
        (run_id, LoopForked.type),
    ):
        event = event_from_dict(dict(json_loads(text)))
        if isinstance(event, LoopForked):
            forks.append(event)
    return forks


def run_new_loops(conn: sqlite3.Connection, run_id: str) -> list[LoopForked | LoopAdded]:
    """The loops run `run_id` forked or added (the `add` op), in the order it made
    them: one list, since a fork may be of an added loop and an added loop like a fork."""
    found: list[LoopForked | LoopAdded] = []
    for (text,) in conn.execute(
        "SELECT json FROM events WHERE run_id = ? AND type IN (?, ?) ORDER BY seq",
        (run_id, LoopForked.type, LoopAdded.type),
    ):
        event = event_from_dict(dict(json_loads(text)))
        if isinstance(event, LoopForked | LoopAdded):
            found.append(event)
    return found


def latest_new_loop(conn: sqlite3.Connection, loop: str) -> LoopForked | LoopAdded | None:
    """The newest record of a loop named `loop` that a run forked or added, of any run
    (None: no run made one of that name)."""
    row = conn.execute(
        "SELECT json FROM events WHERE loop = ? AND type IN (?, ?) ORDER BY seq DESC LIMIT 1",
        (loop, LoopForked.type, LoopAdded.type),
    ).fetchone()
    event = None if row is None else event_from_dict(dict(json_loads(row[0])))
    return event if isinstance(event, LoopForked | LoopAdded) else None


def parents(conn: sqlite3.Connection, run_id: str) -> dict[str, str]:
    """{fork: "PARENT@N"} of run `run_id` (status and history show it)."""
    return {fork.loop: fork.label for fork in run_forks(conn, run_id)}
