"""Journals written by hand for the journal's tests: a run opened in a state dir
(`open_run`), the events `loop.py` emits for one iteration, cut anywhere
(`record_iteration`), and the ledger's rows as the file holds them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from supervisor import events as ev
from supervisor.journal.schema import JOURNAL_NAME
from supervisor.journal.writer import Journal
from supervisor.spec import LoopSpec

CONFIG = '[[loop]]\nname = "a"\n'
"""The loops.toml text a hand-written run records."""


def open_run(state: Path, run_id: str = "run-1", loops: tuple[str, ...] = ("a",)) -> Journal:
    """A journal in `state` with run `run_id` of `loops` started (RunStarted recorded)."""
    journal = Journal.open(state)
    specs = [LoopSpec(name=n, agent="sim", prompt="p", workspace=state) for n in loops]
    journal.start_run(run_id, state / "loops.toml", CONFIG, loops=specs)
    journal.record(ev.RunStarted(run_id=run_id, config="loops.toml", loops=loops))
    return journal


def record_iteration(
    journal: Journal,
    loop: str,
    n: int,
    *,
    outcome: ev.IterationOutcome | None = "continue",
    text: str = "hello world\n",
    tokens: int = 100,
    reserve: int | None = 1000,
    usage: bool = True,
    release: bool = True,
) -> None:
    """The events `loop.py` emits for one iteration; outcome None stops mid-iteration."""
    journal.record(ev.IterationStarted(loop=loop, iteration=n, prompt=f"prompt {n}"))
    journal.record(ev.LoopStateChanged(loop=loop, state="running", reason="turn", iteration=n))
    if reserve is not None:
        journal.record(ev.BudgetReserved(loop=loop, iteration=n, tokens=reserve, usd=0.01))
    for ch in text:
        journal.record(ev.AgentOutput(loop=loop, iteration=n, text=ch))
    if usage:
        journal.record(
            ev.UsageCharged(
                loop=loop, iteration=n, input_tokens=tokens - 10, output_tokens=10, usd=0.001
            )
        )
    if release and reserve is not None:
        journal.record(
            ev.BudgetReleased(
                loop=loop, iteration=n, tokens=reserve - (tokens if usage else 0), usd=0.009
            )
        )
    journal.record(
        ev.SessionSaved(
            loop=loop,
            iteration=n,
            session_id=f"sess-{n}",
            conversation=[{"role": "user", "content": f"prompt {n}"}],
            last_output=text,
            check_output=f"check {n}",
        )
    )
    if outcome is None:
        return
    journal.record(ev.CheckStarted(loop=loop, iteration=n, name="pytest", command="pytest -q"))
    journal.record(
        ev.CheckFinished(
            loop=loop,
            iteration=n,
            name="pytest",
            passed=outcome == "succeeded",
            exit_code=0 if outcome == "succeeded" else 1,
            summary="1 failed" if outcome != "succeeded" else "3 passed",
            output="F..",
            duration_s=0.1,
        )
    )
    journal.record(
        ev.IterationFinished(
            loop=loop,
            iteration=n,
            outcome=outcome,
            reason=f"reason {n}",
            tokens=tokens if usage else 0,
            usd=0.001 if usage else 0.0,
            duration_s=0.5,
            session_id=f"sess-{n}",
        )
    )


def ledger_rows(state: Path) -> list[tuple[str, int, int | None]]:
    """(kind, tokens, settles) of every ledger row, in order."""
    with sqlite3.connect(state / JOURNAL_NAME) as conn:
        rows = conn.execute("SELECT kind, tokens, settles FROM ledger ORDER BY id").fetchall()
    return [(str(k), int(t), s) for k, t, s in rows]
