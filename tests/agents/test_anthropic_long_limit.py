"""An API 429 whose retry-after is long (an account's window, not a blip): the loop
waits visibly (state `waiting`, cause "rate_limit") instead of spending its retries,
and a pause during the wait still pauses it."""

from __future__ import annotations

from pathlib import Path

import pytest
from anthropic_support import anthropic_agent_table
from fake_anthropic import FakeAnthropic, error, text
from helpers import Recorded, load, loop, run_recorded, supervisor_table, wait_event, wait_for

from supervisor import events as ev
from supervisor.agents import anthropic

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("api_key")]


def config_for(tmp_path: Path, server: FakeAnthropic) -> str:
    return "\n".join(
        (
            supervisor_table(),
            anthropic_agent_table("api", server),
            loop("a", "api", done_marker="DONE", budget={"retries": 0}),
        )
    )


async def test_a_long_retry_after_waits_visibly_without_spending_a_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(anthropic, "LONG_RETRY_AFTER_S", 1.0)
    with FakeAnthropic([error(429, retry_after=2), text("DONE")]) as server:
        config = load(tmp_path, config_for(tmp_path, server))
        rec = await run_recorded(config, timeout=30)
    result = rec.result("a")
    assert (result.state, result.iterations) == ("succeeded", 1), result.reason
    [wait] = [e for e in rec.of(ev.LoopStateChanged, "a") if e.cause == "rate_limit"]
    assert wait.state == "waiting"
    assert wait.reason.startswith("rate limit (429), retry at ")
    assert wait.wait_seconds == 2
    assert rec.supervisor.runners["a"].retries_used == 0  # retries = 0 and it succeeded
    assert [f.outcome for f in rec.of(ev.IterationFinished, "a")] == ["succeeded"]


async def test_pause_and_stop_during_the_long_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(anthropic, "LONG_RETRY_AFTER_S", 1.0)
    with FakeAnthropic([error(429, retry_after=600), text("DONE")]) as server:
        config = load(tmp_path, config_for(tmp_path, server))

        async def during(rec: Recorded) -> None:
            sup = rec.supervisor
            runner = sup.runners["a"]
            await wait_event(rec, ev.LoopStateChanged, where=lambda e: e.cause == "rate_limit")
            await sup.pause("a")
            await wait_for(lambda: runner.state == "paused")
            await sup.resume("a")  # the provider's 600 s still hold: it waits again
            await wait_for(lambda: runner.state == "waiting" and runner.iteration == 1)
            await sup.stop("a")

        rec = await run_recorded(config, timeout=30, during=during, exit_when_idle=False)
    result = rec.result("a")
    assert result.state == "stopped", result.reason
    states = rec.states("a")
    assert "paused" in states
    assert states.index("paused") > states.index("waiting")
    outcomes = [f.outcome for f in rec.of(ev.IterationFinished, "a")]
    assert outcomes[0] == "interrupted"  # the pause cut the wait: iteration 1 runs again
    assert "failed" not in outcomes
    assert rec.supervisor.runners["a"].retries_used == 0
    assert len(server.message_requests()) == 1  # nothing was sent before the 600 s passed
