"""AnthropicAgent: the real SDK against the fake Messages API on 127.0.0.1: streaming
and usage, tools, the conversation across turns, and the fake server itself.

Every test drives turns the way the loop does (Usage events charged into a real
LedgerTurnBudget as they arrive, the reservation released at the end) and checks the
API key never shows up in an event. Failures and retries: test_anthropic_errors.py;
the shared budget: test_anthropic_budget.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from anthropic_support import KEY, MODEL, assert_totals, drive, make_agent
from fake_anthropic import FakeAnthropic, input_tokens_for, text, tokens_for_text, tool_use

from supervisor.agents.anthropic import input_upper_bound
from supervisor.agents.base import BudgetExhausted, Done, TextDelta, ToolCall, ToolResult, Usage
from supervisor.budget import Ledger
from supervisor.spec import Limits

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("api_key")]


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


async def test_the_loops_clients_share_one_tls_context(
    server: FakeAnthropic, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Making a TLS context loads the system's CA certificates (~30 ms of CPU): the SDK
    made one per client, i.e. per loop (issue 12: a third of a 10-loop run's CPU).
    Counted: three agents' turns make one."""
    from supervisor.agents import anthropic as agent_module
    from supervisor.agents.anthropic_request import http

    made: list[object] = []
    real = http.create_ssl_context

    def counted() -> object:
        made.append(real())
        return made[-1]

    agent_module._tls_context.cache_clear()
    monkeypatch.setattr(http, "create_ssl_context", counted)
    agents = [make_agent(server, workspace) for _ in range(3)]
    for agent in agents:
        server.push(text("ok"))
        turn = await drive(agent, workspace, "go")
        assert turn.last == Done(output="ok", session_id=None, stop_reason="end_turn")
    for agent in agents:
        await agent.aclose()
    agent_module._tls_context.cache_clear()  # the next test's context is a real one
    assert len(made) == 1


async def test_a_streamed_reply_is_read_under_one_deadline_scope(
    server: FakeAnthropic, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request's deadline bounds the whole read with one cancel scope, not one per
    streamed event (a timer and a generator per token: issue 12, the API path). Counted:
    the per-call deadline guard runs once for the request, not once per word."""
    from supervisor.agents import anthropic_request

    guarded: list[float] = []
    real = anthropic_request.before

    def counted(deadline: float) -> Any:
        guarded.append(deadline)
        return real(deadline)

    monkeypatch.setattr(anthropic_request, "before", counted)
    reply = " ".join(["word"] * 200)
    server.push(text(reply))
    agent = make_agent(server, workspace)
    turn = await drive(agent, workspace, "go")
    await agent.aclose()
    assert turn.last == Done(output=reply, session_id=None, stop_reason="end_turn")
    assert "".join(e.text for e in turn.of(TextDelta)) == reply
    assert len(guarded) == 1
