"""AnthropicAgent against the fake Messages API: what a failed request does. Rate limits
(429 with retry-after), overload and server errors back off and retry, a cut stream
keeps its partial text and is charged once, client errors fail without a retry, and
the shared rate limiter's waits are shown.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from anthropic_support import KEY, MODEL, assert_totals, drive, make_agent, waits
from fake_anthropic import (
    FakeAnthropic,
    RateLimitWindow,
    Reply,
    cut,
    error,
    hang,
    input_tokens_for,
    stream_error,
    text,
)

from supervisor.agents import AgentContext, build_agent
from supervisor.agents.anthropic import AnthropicAgent
from supervisor.agents.base import AgentFailed, Done, Resumed, TextDelta, Waiting
from supervisor.agents.kinds.anthropic import AnthropicAgentSpec
from supervisor.agents.ratelimit import RateLimiterRegistry
from supervisor.budget import Ledger
from supervisor.spec import Limits, LoopSpec, RateLimit

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("api_key")]


# -- errors and retries -------------------------------------------------------------------


async def test_429_honours_retry_after_then_succeeds(
    server: FakeAnthropic, workspace: Path
) -> None:
    server.push(error(429, retry_after=0.3), text("after the wait"))
    limiters = RateLimiterRegistry()
    agent = make_agent(server, workspace, limiters=limiters)
    t0 = anyio.current_time()
    turn = await drive(agent, workspace)
    assert anyio.current_time() - t0 >= 0.3
    [w] = waits(turn)
    assert w == Waiting("rate-limited (429)", seconds=0.3, retry=True)
    i = turn.events.index(w)
    assert isinstance(turn.events[i + 1], Resumed)
    assert turn.text == "after the wait"
    assert isinstance(turn.last, Done)
    # The shared limiter learnt the penalty too (it held every loop for 0.3 s).
    assert limiters.for_provider("anthropic").statistics().penalties == 1
    assert_totals(server, turn.usage)
    await agent.aclose()


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (error(529), "overloaded (529)"),
        (error(500), "server error (500, api_error)"),
        (error(503), "server error (503, api_error)"),
        (stream_error("overloaded_error"), "overloaded (529)"),
    ],
)
async def test_overloaded_and_server_errors_back_off_and_retry(
    server: FakeAnthropic, workspace: Path, reply: Reply, reason: str
) -> None:
    server.push(reply, reply, text("finally"))
    agent = make_agent(server, workspace)
    turn = await drive(agent, workspace)
    ws = waits(turn)
    assert [w.reason for w in ws] == [reason, reason]
    assert all(w.retry for w in ws)
    # Exponential with jitter: attempt 1 in [0.025, 0.05], attempt 2 in [0.05, 0.1].
    seconds = [w.seconds or 0.0 for w in ws]
    assert 0.025 <= seconds[0] <= 0.05
    assert 0.05 <= seconds[1] <= 0.1
    assert len(turn.of(Resumed)) == 2
    assert isinstance(turn.last, Done)
    assert turn.last.output == "finally"
    assert_totals(server, turn.usage)
    await agent.aclose()


async def test_cut_stream_keeps_partial_text_charges_once_and_retries(
    server: FakeAnthropic, workspace: Path
) -> None:
    server.push(cut("alpha beta gamma delta epsilon", after=2), text("complete reply"))
    ledger = Ledger("l", Limits(tokens=10_000))
    agent = make_agent(server, workspace, context="continue")
    turn = await drive(agent, workspace, ledger=ledger)
    assistant = [e.text for e in turn.of(TextDelta) if e.stream == "assistant"]
    assert assistant == ["alpha ", "beta ", "complete ", "reply"]
    raw = [e.text for e in turn.of(TextDelta) if e.stream == "raw"]
    assert len(raw) == 1
    assert "reply discarded" in raw[0]
    [w] = waits(turn)
    assert w.retry
    assert w.reason.startswith("connection lost")
    # The cut attempt's message_start usage was charged once, the retry's on top.
    cut_req, ok_req = server.message_requests()
    n = input_tokens_for(cut_req.body)
    assert input_tokens_for(ok_req.body) == n  # the same request was sent again
    assert turn.usage.input_tokens == 2 * n
    assert_totals(server, turn.usage)
    assert ledger.tokens_spent == server.totals.tokens
    # Only the completed reply is part of the conversation and the output.
    assert turn.last == Done("complete reply", session_id=agent.session_id, stop_reason="end_turn")
    history = agent.conversation()
    assert history is not None
    assert history[-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "complete reply"}],
    }
    await agent.aclose()


async def test_hang_times_out_and_is_retried(server: FakeAnthropic, workspace: Path) -> None:
    server.push(hang(10), hang(10, after_start=True), text("awake"))
    agent = make_agent(server, workspace, stall=0.5)  # silence, well before the deadline
    turn = await drive(agent, workspace)
    assert [w.reason for w in waits(turn)] == ["timed out", "timed out mid-stream"]
    assert turn.text == "awake"
    assert isinstance(turn.last, Done)
    assert_totals(server, turn.usage)  # the second hang's message_start usage counts
    await agent.aclose()


@pytest.mark.parametrize(("status", "kind"), [(401, "authentication_error"), (400, "invalid_")])
async def test_client_errors_fail_without_retry_or_key(
    server: FakeAnthropic, workspace: Path, status: int, kind: str
) -> None:
    server.push(error(status, f"bad request for key {KEY}"))
    agent = make_agent(server, workspace)
    turn = await drive(agent, workspace)  # asserts the key is in no event
    assert not waits(turn)
    assert isinstance(turn.last, AgentFailed)
    assert turn.last.retryable is False
    assert str(status) in turn.last.message
    assert kind in turn.last.message
    assert "[REDACTED:ANTHROPIC_API_KEY]" in turn.last.message
    assert len(server.message_requests()) == 1
    await agent.aclose()


async def test_gives_up_after_max_attempts(workspace: Path) -> None:
    with FakeAnthropic(default=error(500)) as server:
        agent = make_agent(server, workspace)
        agent.max_attempts = 3
        turn = await drive(agent, workspace)
        assert len(waits(turn)) == 2
        assert isinstance(turn.last, AgentFailed)
        assert turn.last.retryable
        assert "gave up" in turn.last.message
        await agent.aclose()


async def test_missing_key_fails_cleanly(
    server: FakeAnthropic, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    agent = make_agent(server, workspace)
    turn = await drive(agent, workspace)
    assert turn.events == [AgentFailed("ANTHROPIC_API_KEY is not set", retryable=False)]
    assert server.requests == []


async def test_base_url_defaults_to_the_sdk_env_handling(
    server: FakeAnthropic, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
    agent = make_agent(server, workspace, base_url=None)
    turn = await drive(agent, workspace)
    assert isinstance(turn.last, Done)
    assert len(server.message_requests()) == 1
    await agent.aclose()


async def test_build_agent_makes_an_anthropic_agent(server: FakeAnthropic, workspace: Path) -> None:
    spec = AnthropicAgentSpec(name="api", model=MODEL, base_url=server.base_url)
    loop = LoopSpec(name="l", agent="api", prompt="p", workspace=workspace)
    agent = build_agent(spec, loop, AgentContext(state_dir=workspace))
    assert isinstance(agent, AnthropicAgent)
    turn = await drive(agent, workspace)
    assert isinstance(turn.last, Done)
    await agent.aclose()


# -- rate limiting --------------------------------------------------------------------------


async def test_limiter_wait_is_shown_and_headers_are_learnt(workspace: Path) -> None:
    limits = RateLimitWindow(requests=1000, tokens=1_000_000, window=60.0)
    with FakeAnthropic(ratelimit=limits) as server:
        # One request a 2 s "minute": the second turn waits for the bucket to refill.
        registry = RateLimiterRegistry(
            {"anthropic": RateLimit(requests_per_minute=1)}, period=2.0, burst=1.0
        )
        agent = make_agent(server, workspace, limiters=registry)
        first = await drive(agent, workspace)
        assert not waits(first)
        second = await drive(agent, workspace, iteration=2)
        [w] = waits(second)
        assert w.retry is False
        assert w.reason.startswith("rate limit: 1 rpm")
        assert 0.5 <= (w.seconds or 0) <= 2.0
        assert isinstance(second.events[second.events.index(w) + 1], Resumed)
        stats = registry.for_provider("anthropic").statistics()
        assert stats.requests == 2
        assert stats.waits == 1
        # An unconfigured token limit was learnt from anthropic-ratelimit-* headers.
        assert stats.tokens_per_minute == 1_000_000
        await agent.aclose()
