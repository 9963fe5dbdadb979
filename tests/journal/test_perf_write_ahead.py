"""Reservations are written ahead together (issue 12): a reservation is on disk before
the agent that made it goes on, and the reservations made in one turn of the event loop
share one transaction (1,000 sim loops reserving together were 1,000 transactions on
the event loop). Counted, not timed: transactions per reservation."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from supervisor import events as ev
from supervisor.budget import Ledger
from supervisor.journal.writer import Journal
from supervisor.spec import Limits
from supervisor.turn_budget import LedgerTurnBudget

pytestmark = pytest.mark.anyio

LOOPS = 50


async def test_reservations_of_one_event_loop_turn_share_a_transaction(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "state")
    journal.start_run("r1", tmp_path / "loops.toml", "")
    reader = sqlite3.connect(tmp_path / "state" / "journal.sqlite3")
    top = Ledger("global", Limits())
    on_disk_when_resumed: dict[str, bool] = {}

    async def reserve(name: str) -> None:
        def booking(kind: str, tokens: int, usd: float) -> None:
            cls = ev.BudgetReserved if kind == "reserved" else ev.BudgetReleased
            journal.record(cls(loop=name, iteration=1, tokens=tokens, usd=usd))

        budget = LedgerTurnBudget(Ledger(name, Limits(), parent=top), on_booking=booking)
        await budget.reserve(input_tokens=100, max_output_tokens=1000, usd_per_token=1e-6)
        row = reader.execute(
            "SELECT 1 FROM ledger WHERE kind = 'reserve' AND loop = ?", (name,)
        ).fetchone()
        on_disk_when_resumed[name] = row is not None

    before = journal.statistics().batches_written
    async with anyio.create_task_group() as tg:
        for i in range(LOOPS):
            tg.start_soon(reserve, f"l{i}")
    assert on_disk_when_resumed == {f"l{i}": True for i in range(LOOPS)}  # write-ahead
    assert journal.statistics().batches_written - before == 1  # not one per reservation
    journal.close()
    reader.close()


def test_a_reservation_recorded_off_the_event_loop_is_written_at_once(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "state")
    journal.start_run("r1", tmp_path / "loops.toml", "")
    journal.record(ev.BudgetReserved(loop="api", iteration=1, tokens=4000, usd=0.02))
    with sqlite3.connect(tmp_path / "state" / "journal.sqlite3") as reader:
        rows = reader.execute("SELECT tokens FROM ledger WHERE kind = 'reserve'").fetchall()
    assert rows == [(4000,)]
    journal.close()
