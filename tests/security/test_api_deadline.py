"""Issue 10 item 9: an API request has a total deadline, not only a per-read timeout.

A server that sends an SSE ping every 0.3 s is never silent for a whole `timeout`,
so a per-read timeout alone kept a `timeout = "1s"` request alive for as long as the
server liked (95 s for a 1.5 s drip in the report). `timeout` now bounds the whole
request and `stall` the silence between events; a request cut at its deadline is a
retryable failure like any other timeout, and what it was billed stays charged.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from anthropic_support import MODEL, assert_totals, drive, make_agent, waits
from fake_anthropic import FakeAnthropic, drip, text
from helpers import load, loop, run_recorded, supervisor_table, table

from supervisor import events as ev
from supervisor.agents.base import Done
from supervisor.agents.kinds.anthropic import AnthropicAgentSpec
from supervisor.config.load import ConfigError

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("api_key")]

BOUND_S = 10.0
"""Far above the 1 s deadline: the point is that the request ends, not how fast."""


async def test_a_dripping_stream_is_cut_at_the_total_deadline_and_retried(
    tmp_path: Path,
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with FakeAnthropic([drip(0.3), text("awake")]) as server:
        agent = make_agent(server, workspace, timeout=1.0)
        started = anyio.current_time()
        with anyio.move_on_after(BOUND_S) as bound:
            turn = await drive(agent, workspace)
        elapsed = anyio.current_time() - started
        await agent.aclose()
    assert not bound.cancelled_caught, f"the request outlived its 1s deadline by {BOUND_S}s"
    assert 0.9 <= elapsed < 5, elapsed
    [wait] = waits(turn)
    assert wait.retry is True
    assert "took longer than 1s" in wait.reason
    assert turn.text == "awake"
    assert isinstance(turn.last, Done)
    # what the cut request was billed (its message_start usage) is charged, once
    assert_totals(server, turn.usage)
    assert [r.reply for r in server.message_requests()] == ["drip", "text"]


async def test_under_a_loop_the_deadline_counts_toward_retries(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    with FakeAnthropic(default=drip(0.3)) as server:
        config = load(
            tmp_path,
            supervisor_table(max_concurrent=1, tokens=100_000),
            table(
                "agents.api", kind="anthropic", model=MODEL, base_url=server.base_url, timeout="1s"
            ),
            loop(
                "l",
                "api",
                workspace="ws",
                max_iterations=3,
                done_marker="NEVER",
                budget={"retries": 1},
            ),
        )
        with anyio.move_on_after(BOUND_S * 2) as bound:
            rec = await run_recorded(config, timeout=BOUND_S * 3)
    assert not bound.cancelled_caught
    result = rec.result("l")
    assert result.state == "failed", result
    waiting = [e for e in rec.of(ev.LoopStateChanged, "l") if e.state == "waiting"]
    assert any("took longer than 1s" in e.reason for e in waiting)
    stats = rec.supervisor.ledger.statistics()
    assert stats.tokens_reserved == 0, "every reservation settled"
    assert stats.tokens_spent == server.totals.tokens, "charged exactly what was billed"


def test_stall_is_its_own_key_and_timeout_stays_accepted(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        table("agents.a", kind="anthropic", model=MODEL, timeout="90s", stall="20s"),
        table("agents.b", kind="anthropic", model=MODEL, timeout="5s"),
        table("agents.c", kind="anthropic", model=MODEL),
        loop("l", "a", done_marker="DONE"),
    )
    a, b, c = (config.agents[n] for n in "abc")
    assert isinstance(a, AnthropicAgentSpec)
    assert isinstance(b, AnthropicAgentSpec)
    assert isinstance(c, AnthropicAgentSpec)
    assert (a.timeout, a.stall) == (90.0, 20.0)
    assert (b.timeout, b.stall) == (5.0, 600.0)
    assert (c.timeout, c.stall) == (1800.0, 600.0)
    with pytest.raises(ConfigError, match="stall"):
        load(
            tmp_path,
            supervisor_table(),
            table("agents.a", kind="anthropic", model=MODEL, stall="soon"),
            loop("l", "a", done_marker="DONE"),
        )
