"""Events per iteration, counted (issue 12: a sim iteration's supervisor CPU is mostly
its events: each is built, redacted, journalled, encoded and printed). Untimed: the
events one sim iteration publishes, by type, and the output events of a reply that
reached the turn in one burst."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from helpers import load, loop, run_recorded, sim_agent, supervisor_table

from supervisor import events as ev

pytestmark = pytest.mark.anyio


async def test_a_sim_iteration_publishes_a_counted_set_of_events(tmp_path: Path) -> None:
    """60 tokens with usage every 16 (5 usage events), all due at once (rate 0): one
    output event per iteration, not one per usage report (the turn flushed the text
    it held before publishing each usage)."""
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("sim", rate=0, reply_tokens=60, converge_after=3, done_text="ALL DONE"),
        loop("s", "sim", max_iterations=3, done_marker="ALL DONE", stuck={"stall": False}),
    )
    rec = await run_recorded(config)
    assert rec.summary is not None
    assert rec.summary.exit_code == 0
    per_iteration = collections.Counter(
        (type(e).__name__, getattr(e, "iteration", None)) for e in rec.events
    )
    for n in (1, 2, 3):
        counts = {name: c for (name, i), c in per_iteration.items() if i == n}
        assert counts == {
            "IterationStarted": 1,
            "LoopStateChanged": 1 if n < 3 else 2,  # running (and succeeded)
            "BudgetReserved": 1,
            "AgentOutput": 1,
            "UsageCharged": 5,
            "BudgetReleased": 1,
            "SessionSaved": 1,
            "IterationFinished": 1,
            "LoopCheckpoint": 1,
        }, n
    text = [e.text for e in rec.events if isinstance(e, ev.AgentOutput)]
    assert all(t.endswith("\n") for t in text)  # each iteration's whole reply, in order
