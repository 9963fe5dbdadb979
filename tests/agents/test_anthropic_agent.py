"""AnthropicAgent: the real SDK against the fake Messages API on 127.0.0.1.

Every test drives turns the way the loop does (Usage events charged into a real
LedgerTurnBudget as they arrive, the reservation released at the end) and checks the
API key never shows up in an event.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anthropic_support import (
    KEY,
    MODEL,
    anthropic_agent_table,
    assert_totals,
    drive,
    make_agent,
    waits,
)
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
    tokens_for_text,
    tool_use,
)
from helpers import REPO, load, loop, run_recorded, supervisor_table, table

from supervisor import events as ev
from supervisor.agents import AgentContext, build_agent
from supervisor.agents.anthropic import AnthropicAgent, input_upper_bound
from supervisor.agents.base import (
    AgentFailed,
    BudgetExhausted,
    Done,
    Resumed,
    TextDelta,
    ToolCall,
    ToolResult,
    Usage,
    Waiting,
)
from supervisor.agents.kinds.anthropic import AnthropicAgentSpec
from supervisor.agents.ratelimit import RateLimiterRegistry
from supervisor.budget import Ledger
from supervisor.config.load import load_config
from supervisor.spec import Limits, LoopSpec, RateLimit

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("api_key")]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as srv:
        yield srv


# -- streaming and usage ----------------------------------------------------------------


async def test_text_streams_in_order_and_usage_matches_the_server(
    server: FakeAnthropic, workspace: Path
) -> None:
    reply = "The quick brown fox jumps over the lazy dog."
    server.push(text(reply, cache_read=7, cache_creation=3))
    agent = make_agent(server, workspace, system="Be brief.")
    turn = await drive(agent, workspace, "Tell me about foxes.")
    deltas = [e.text for e in turn.of(TextDelta)]
    assert deltas == [
        "The ",
        "quick ",
        "brown ",
        "fox ",
        "jumps ",
        "over ",
        "the ",
        "lazy ",
        "dog.",
    ]
    assert turn.last == Done(output=reply, session_id=None, stop_reason="end_turn")
    # Usage is deltas: message_start (input, cache, 1 output) then the rest of the output.
    usages = turn.of(Usage)
    assert [u.output_tokens for u in usages] == [1, tokens_for_text(reply) - 1]
    assert all(u.model == MODEL for u in usages)
    assert_totals(server, turn.usage)
    assert turn.usage.cache_read_tokens == 7
    assert turn.usage.cache_creation_tokens == 3
    [req] = server.message_requests()
    assert req.body["stream"] is True
    assert req.body["model"] == MODEL
    assert req.body["system"] == "Be brief."
    assert req.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Tell me about foxes."}]}
    ]
    assert "tools" not in req.body
    # The key was sent (this SDK sends it as a bearer token, older ones as x-api-key).
    assert KEY in (req.headers.get("x-api-key", ""), req.headers.get("authorization", "")[7:])
    await agent.aclose()


async def test_ledger_equals_server_and_usd_is_priced(
    server: FakeAnthropic, workspace: Path
) -> None:
    server.push(text("one two three"), text("four five"))
    ledger = Ledger("l", Limits(tokens=100_000))
    agent = make_agent(server, workspace)
    await drive(agent, workspace, ledger=ledger)
    await drive(agent, workspace, ledger=ledger, iteration=2)
    t = server.totals
    assert ledger.tokens_spent == t.tokens
    assert ledger.tokens_reserved == 0
    # claude-haiku-4-5: $1 in / $5 out per million
    assert ledger.usd_spent == pytest.approx((t.input_tokens * 1 + t.output_tokens * 5) / 1e6)
    await agent.aclose()


async def test_reservation_is_the_counted_input_plus_max_tokens(
    server: FakeAnthropic, workspace: Path
) -> None:
    agent = make_agent(server, workspace, max_tokens=150)
    turn = await drive(agent, workspace, "Count me.")
    [count] = [r for r in server.requests if r.reply == "count_tokens"]
    n = input_tokens_for(count.body)
    reserved = turn.bookings[0]
    assert reserved == ("reserved", n + 8 + 150)  # count + margin (min 8) + max_tokens
    assert turn.usage.input_tokens == n  # the count was exact; the margin was not used
    await agent.aclose()


async def test_without_count_tokens_the_byte_bound_is_reserved(workspace: Path) -> None:
    with FakeAnthropic(count_tokens=False) as server:
        agent = make_agent(server, workspace, max_tokens=50)
        first = await drive(agent, workspace, "Estimate me.")
        second = await drive(agent, workspace, "And me.", iteration=2)
        # count_tokens answered 404 once and was not asked again.
        assert [r.reply for r in server.requests] == ["error 404", "text", "text"]
        [req] = server.message_requests()[:1]
        bound = input_upper_bound(req.body)
        assert first.bookings[0] == ("reserved", bound + 50)
        assert first.usage.input_tokens < bound
        assert second.of(Done)
        await agent.aclose()


async def test_max_tokens_is_clamped_to_the_budget_grant(
    server: FakeAnthropic, workspace: Path
) -> None:
    long_reply = " ".join(f"w{i}" for i in range(500))
    server.push(text(long_reply))
    ledger = Ledger("l", Limits(tokens=300))
    agent = make_agent(server, workspace, max_tokens=1000)
    turn = await drive(agent, workspace, "Write a lot.", ledger=ledger)
    [req] = server.message_requests()
    n = input_tokens_for(req.body)
    granted = 300 - (n + 8)
    assert req.body["max_tokens"] == granted
    assert turn.usage.output_tokens == granted
    assert isinstance(turn.last, Done)
    assert turn.last.stop_reason == "max_tokens"
    assert ledger.tokens_spent == server.totals.tokens <= 300
    assert ledger.overshoot_tokens == 0
    # Nothing left for another prompt: the next turn cannot even reserve.
    with pytest.raises(BudgetExhausted):
        await drive(agent, workspace, "More.", ledger=ledger, iteration=2)
    await agent.aclose()


# -- tools ----------------------------------------------------------------------------------


async def test_tool_round_writes_the_file_and_sends_the_result(
    server: FakeAnthropic, workspace: Path
) -> None:
    server.push(
        tool_use(
            "write_file",
            {"path": "src/hello.py", "content": "print('hi')\n"},
            preface="I will write it.",
            id="toolu_w1",
        ),
        text("Done writing."),
    )
    agent = make_agent(server, workspace, tools=["write_file", "read_file", "list_files", "run"])
    turn = await drive(agent, workspace, "Create src/hello.py")
    assert (workspace / "src/hello.py").read_text() == "print('hi')\n"
    assert turn.of(ToolCall) == [
        ToolCall("toolu_w1", "write_file", {"path": "src/hello.py", "content": "print('hi')\n"})
    ]
    assert turn.of(ToolResult) == [ToolResult("toolu_w1", "wrote 12 bytes to src/hello.py")]
    assert turn.last == Done(
        output="I will write it.\nDone writing.", session_id=None, stop_reason="end_turn"
    )
    first, second = server.message_requests()
    assert [t["name"] for t in first.body["tools"]] == [
        "write_file",
        "read_file",
        "list_files",
        "run",
    ]
    assert second.body["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "I will write it."},
            {
                "type": "tool_use",
                "id": "toolu_w1",
                "name": "write_file",
                "input": {"path": "src/hello.py", "content": "print('hi')\n"},
            },
        ],
    }
    assert second.body["messages"][2] == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_w1",
                "content": "wrote 12 bytes to src/hello.py",
            }
        ],
    }
    assert_totals(server, turn.usage)
    await agent.aclose()


@pytest.mark.parametrize("path", ["../escaped.txt", "/tmp/loopvisor-escaped.txt", "link/x.txt"])
async def test_path_escapes_come_back_as_tool_errors(
    server: FakeAnthropic, workspace: Path, path: str
) -> None:
    outside = workspace.parent / "outside"
    outside.mkdir()
    os.symlink(outside, workspace / "link")
    server.push(tool_use("write_file", {"path": path, "content": "x"}, id="t1"), text("ok"))
    agent = make_agent(server, workspace, tools=["write_file"])
    turn = await drive(agent, workspace)
    [result] = turn.of(ToolResult)
    assert result.is_error
    assert not (workspace.parent / "escaped.txt").exists()
    assert not os.path.lexists("/tmp/loopvisor-escaped.txt")  # noqa: ASYNC240
    assert list(outside.iterdir()) == []
    second = server.message_requests()[1]
    sent = second.body["messages"][2]["content"][0]
    assert sent["is_error"] is True
    assert sent["tool_use_id"] == "t1"
    assert isinstance(turn.last, Done)
    await agent.aclose()


async def test_run_tool_output_never_leaks_the_key(server: FakeAnthropic, workspace: Path) -> None:
    server.push(tool_use("run", {"command": "env; echo $ANTHROPIC_API_KEY"}), text("ok"))
    agent = make_agent(server, workspace, tools=["run"])
    turn = await drive(agent, workspace)  # drive() asserts KEY not in any event
    [result] = turn.of(ToolResult)
    assert result.output.startswith("exit code 0")
    assert KEY not in json.dumps(server.message_requests()[1].body)
    await agent.aclose()


async def test_tool_rounds_are_capped_by_max_turns(workspace: Path) -> None:
    with FakeAnthropic(default=tool_use("list_files", {})) as server:
        agent = make_agent(server, workspace, tools=["list_files"], max_turns=3)
        turn = await drive(agent, workspace, "Loop forever.")
        assert len(server.message_requests()) == 3
        assert len(turn.of(ToolCall)) == 3
        assert len(turn.of(ToolResult)) == 3
        assert isinstance(turn.last, Done)
        assert turn.last.stop_reason == "max_turns"
        await agent.aclose()


async def test_unknown_tool_is_an_error_result(server: FakeAnthropic, workspace: Path) -> None:
    server.push(tool_use("rm_rf", {"path": "/"}), text("sorry"))
    agent = make_agent(server, workspace, tools=["read_file"])
    turn = await drive(agent, workspace)
    [result] = turn.of(ToolResult)
    assert result.is_error
    assert "unknown tool" in result.output
    await agent.aclose()


# -- context ----------------------------------------------------------------------------


async def test_continue_keeps_the_conversation(server: FakeAnthropic, workspace: Path) -> None:
    server.push(text("First answer."), text("Second answer."))
    agent = make_agent(server, workspace, context="continue")
    t1 = await drive(agent, workspace, "First question?")
    t2 = await drive(agent, workspace, "Second question?", iteration=2)
    assert isinstance(t1.last, Done)
    assert isinstance(t2.last, Done)
    assert t1.last.session_id == t2.last.session_id == agent.session_id
    assert agent.session_id is not None
    second = server.message_requests()[1]
    assert second.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "First question?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "First answer."}]},
        {"role": "user", "content": [{"type": "text", "text": "Second question?"}]},
    ]
    history = agent.conversation()
    assert history is not None
    assert len(history) == 4
    json.dumps(history)  # JSON-able for the journal
    await agent.aclose()

    # A new agent (after a supervisor restart) continues from the journalled history.
    resumed = make_agent(server, workspace, context="continue")
    resumed.restore(agent.session_id, history)
    await drive(resumed, workspace, "Third question?", iteration=3)
    third = server.message_requests()[2]
    assert len(third.body["messages"]) == 5
    assert third.body["messages"][:4] == history
    await resumed.aclose()


async def test_fresh_context_starts_anew_after_reset(
    server: FakeAnthropic, workspace: Path
) -> None:
    agent = make_agent(server, workspace, context="fresh")
    await drive(agent, workspace, "One?")
    agent.reset()  # the loop does this before every fresh iteration
    await drive(agent, workspace, "Two?", iteration=2)
    second = server.message_requests()[1]
    assert second.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Two?"}]}
    ]
    assert agent.conversation() is None
    assert agent.session_id is None
    await agent.aclose()


async def test_an_interrupted_tool_call_is_answered_before_the_next_prompt(
    server: FakeAnthropic, workspace: Path
) -> None:
    agent = make_agent(server, workspace, context="continue")
    agent.restore(
        "api-x",
        [
            {"role": "user", "content": "Do it."},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t9", "name": "run", "input": {}}],
            },
        ],
    )
    await drive(agent, workspace, "Again.")
    msgs = server.message_requests()[0].body["messages"]
    assert msgs[2]["role"] == "user"
    assert msgs[2]["content"][0]["tool_use_id"] == "t9"
    assert msgs[2]["content"][0]["is_error"] is True
    assert msgs[2]["content"][1] == {"type": "text", "text": "Again."}
    await agent.aclose()


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


# -- the shared global budget ---------------------------------------------------------------


async def run_until_exhausted(
    agents: list[AnthropicAgent], workspace: Path, global_ledger: Ledger
) -> list[int]:
    turns = [0] * len(agents)

    async def loop(i: int) -> None:
        ledger = Ledger(f"loop{i}", Limits(), parent=global_ledger)
        for n in range(1, 100):
            agents[i].reset()  # context = "fresh", as the loop does
            try:
                turn = await drive(agents[i], workspace, f"Loop {i}, turn {n}.", ledger=ledger)
            except BudgetExhausted:  # at the first request of a turn, or a later tool round
                return
            assert isinstance(turn.last, Done)
            turns[i] += 1
            assert global_ledger.tokens_spent <= global_ledger.limits.tokens  # type: ignore[operator]

    async with anyio.create_task_group() as tg:
        for i in range(len(agents)):
            tg.start_soon(loop, i)
    return turns


@pytest.mark.parametrize("count_tokens", [True, False])
async def test_shared_global_budget_is_never_exceeded(workspace: Path, count_tokens: bool) -> None:
    """Six API loops, tool rounds and long replies, one global token budget."""
    long_reply = " ".join(f"word{i}" for i in range(120))
    script = [
        tool_use("write_file", {"path": "notes.txt", "content": "x" * 200}),
        text(long_reply, delay=0.0005),
    ] * 40
    limit = 40_000
    with FakeAnthropic(script, default=text(long_reply), count_tokens=count_tokens) as server:
        global_ledger = Ledger("global", Limits(tokens=limit))
        agents = [
            make_agent(server, workspace, tools=["write_file"], max_tokens=400) for _ in range(6)
        ]
        turns = await run_until_exhausted(agents, workspace, global_ledger)
        for agent in agents:
            await agent.aclose()
        stats = global_ledger.statistics()
        assert stats.tokens_spent <= limit
        assert stats.overshoot_tokens == 0
        assert stats.tokens_reserved == 0
        assert stats.tokens_spent == server.totals.tokens  # exactly the server's own bill
        assert sum(turns) >= 12
        # The budget was really used up, not abandoned early.
        assert stats.tokens_spent > limit * 0.5
        if count_tokens:
            assert stats.tokens_spent > limit * 0.9


# -- under the real supervisor --------------------------------------------------------------


async def test_a_loop_converges_with_write_file_and_a_check(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    script = [
        text("Let me think about it first."),  # iteration 1: no file, the check fails
        error(429, retry_after=0.2),  # iteration 2: rate-limited once, then...
        tool_use("write_file", {"path": "hello.txt", "content": "Hello, world\n"}),
        text("Written."),
    ]
    with FakeAnthropic(script) as server:
        config = load(
            tmp_path,
            supervisor_table(max_concurrent=1, tokens=50_000),
            table("supervisor.rate_limits.anthropic", requests_per_minute=600),
            anthropic_agent_table("api", server, tools=["write_file", "read_file"]),
            loop(
                "hello",
                "api",
                workspace="ws",
                max_iterations=4,
                context="continue",
                prompt="Create hello.txt with 'Hello, world'. Last check: $check_output",
                checks=[{"name": "hello", "run": "cat hello.txt", "pattern": "^Hello, world$"}],
            ),
        )
        rec = await run_recorded(config)
    assert rec.result("hello").state == "succeeded"
    assert rec.result("hello").iterations == 2
    assert (tmp_path / "ws/hello.txt").read_text() == "Hello, world\n"
    waiting = [e for e in rec.of(ev.LoopStateChanged, "hello") if e.state == "waiting"]
    assert any("rate-limited (429)" in e.reason for e in waiting)
    [called] = rec.of(ev.ToolCalled, "hello")
    assert called.name == "write_file"
    [returned] = rec.of(ev.ToolReturned, "hello")
    assert returned.output == "wrote 13 bytes to hello.txt"
    ledger = rec.supervisor.ledger.statistics()
    assert ledger.tokens_spent == server.totals.tokens
    charged = rec.of(ev.UsageCharged, "hello")
    assert sum(e.input_tokens for e in charged) == server.totals.input_tokens
    assert sum(e.output_tokens for e in charged) == server.totals.output_tokens
    # Iteration 2 continued iteration 1's conversation.
    last = server.message_requests()[-1].body["messages"]
    assert last[1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "Let me think about it first."}],
    }
    assert KEY not in repr(rec.events)


async def test_api_loops_share_a_global_budget_under_the_supervisor(tmp_path: Path) -> None:
    names = [f"l{i}" for i in range(5)]
    for name in names:
        (tmp_path / name).mkdir()
    long_reply = " ".join(f"token{i}" for i in range(150))
    limit = 20_000
    with FakeAnthropic(default=text(long_reply)) as server:
        config = load(
            tmp_path,
            supervisor_table(max_concurrent=5, tokens=limit),
            anthropic_agent_table("api", server, max_tokens=500),
            *(
                loop(
                    n,
                    "api",
                    workspace=n,
                    max_iterations=50,
                    done_marker="NEVER",
                    on_stuck="continue",
                )
                for n in names
            ),
        )
        rec = await run_recorded(config, timeout=40)
    assert rec.summary is not None
    assert [r.state for r in rec.summary.loops] == ["exhausted"] * 5
    stats = rec.supervisor.ledger.statistics()
    assert stats.tokens_spent <= limit
    assert stats.overshoot_tokens == 0
    assert stats.tokens_spent == server.totals.tokens
    assert stats.tokens_spent > limit * 0.9
    assert rec.summary.tokens == stats.tokens_spent


def test_the_example_config_is_valid() -> None:
    config = load_config(REPO / "examples/anthropic.toml")
    kinds = {a.kind for a in config.agents.values()}
    assert kinds == {"anthropic"}
    assert config.supervisor.rate_limits["anthropic"].requests_per_minute == 50
    assert not [w for w in config.warnings if "price" in w]


async def test_a_retry_reserves_again_so_a_cut_stream_cannot_overshoot(
    server: FakeAnthropic, workspace: Path
) -> None:
    long_reply = " ".join(f"w{i}" for i in range(400))
    server.push(cut(long_reply, after=50), text(long_reply))
    agent = make_agent(server, workspace, max_tokens=300)
    params_probe = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Go."}]}]}
    n = input_tokens_for(params_probe)
    # Room for one full request (n + margin + 300) and a bit: not for a second one.
    limit = (n + 8 + 300) + 20
    ledger = Ledger("l", Limits(tokens=limit))
    turn = await drive(agent, workspace, "Go.", ledger=ledger)
    first, second = server.message_requests()
    assert first.body["max_tokens"] == 300
    # The cut attempt's usage (n input + 1 output) was charged: the retry got less.
    assert second.body["max_tokens"] == limit - (n + 1) - (n + 8)
    assert isinstance(turn.last, Done)
    assert turn.last.stop_reason == "max_tokens"
    assert ledger.tokens_spent == server.totals.tokens <= limit
    assert ledger.overshoot_tokens == 0
    await agent.aclose()


# -- the fake server itself (other tests rely on its arithmetic) ----------------------------


async def test_fake_server_json_replies_beta_path_and_matchers() -> None:
    import anthropic

    script = [
        text("for haiku", when=lambda body: body.get("model") == "claude-haiku-4-5"),
        tool_use("write_file", {"path": "a", "content": "y" * 400}, preface="big tool"),
    ]
    with FakeAnthropic(script, default=text("default")) as server:
        client = anthropic.AsyncAnthropic(api_key=KEY, base_url=server.base_url, max_retries=0)
        async with client:
            msgs: Any = [{"role": "user", "content": "hi"}]
            # The matcher skips the first reply for another model; the tool block does not
            # fit in 5 tokens and is dropped: truncated to its preface, "max_tokens".
            other = await client.messages.create(model="claude-opus-5", max_tokens=5, messages=msgs)
            assert [b.type for b in other.content] == ["text"]
            assert other.stop_reason == "max_tokens"
            assert other.usage.output_tokens == tokens_for_text("big tool")
            mine = await client.messages.create(
                model="claude-haiku-4-5", max_tokens=50, messages=msgs, extra_query={"beta": "true"}
            )
            assert mine.content[0].type == "text"
            assert mine.content[0].text == "for haiku"
            counted = await client.messages.count_tokens(model="claude-haiku-4-5", messages=msgs)
            assert counted.input_tokens == input_tokens_for({"messages": msgs})
            rest = await client.messages.create(model="x", max_tokens=9, messages=msgs)
            assert rest.content[0].type == "text"
            assert rest.content[0].text == "default"
        assert server.pending == 0
        assert [r.path for r in server.requests][1] == "/v1/messages?beta=true"
        assert [r.reply for r in server.requests] == ["text", "text", "count_tokens", "text"]
        assert server.totals.messages == 3
        assert server.totals.input_tokens == 3 * input_tokens_for({"messages": msgs})


async def test_thinking_blocks_are_sent_back_with_their_signature(
    server: FakeAnthropic, workspace: Path
) -> None:
    server.push(
        tool_use("write_file", {"path": "t.txt", "content": "x"}, thinking="Plan: write it."),
        text("Done.", thinking="It worked."),
    )
    agent = make_agent(server, workspace, tools=["write_file"])
    turn = await drive(agent, workspace)
    assert turn.text == "Done."  # thinking is not the answer
    assert isinstance(turn.last, Done)
    assert turn.last.output == "Done."
    assistant = server.message_requests()[1].body["messages"][1]
    thinking, call = assistant["content"]
    assert thinking["type"] == "thinking"
    assert thinking["thinking"] == "Plan: write it."
    assert thinking["signature"].startswith("sig-")
    assert call["type"] == "tool_use"
    assert_totals(server, turn.usage)  # thinking tokens are output tokens too
    await agent.aclose()
