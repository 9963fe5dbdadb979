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
from supervisor import usage_merge

pytestmark = pytest.mark.anyio


async def test_a_sim_iteration_publishes_a_counted_set_of_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """60 tokens with usage every 16 (5 usage reports), all due at once (rate 0): one
    output event per iteration, not one per usage report (the turn flushed the text
    it held before publishing each usage), and one usage event: the five reports
    merged (`usage_merge`; its window made long here so that no pause of a loaded
    machine splits it), with their sum."""
    monkeypatch.setattr(usage_merge, "USAGE_INTERVAL_S", 3600.0)
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
            "UsageCharged": 1,
            "BudgetReleased": 1,
            "SessionSaved": 1,
            "IterationFinished": 1,
            "LoopCheckpoint": 1,
        }, n
    usage = [e for e in rec.events if isinstance(e, ev.UsageCharged)]
    replies = [60, 60, 60 + 2]  # the third converges: "ALL DONE" is two tokens more
    assert [e.output_tokens for e in usage] == replies
    assert all(e.input_tokens > 0 and e.usd > 0 for e in usage)
    text = [e.text for e in rec.events if isinstance(e, ev.AgentOutput)]
    assert all(t.endswith("\n") for t in text)  # each iteration's whole reply, in order
