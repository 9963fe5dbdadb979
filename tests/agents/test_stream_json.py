"""The stream-json parser against lines recorded from the real CLI.

Recordings in tests/data/stream_json/ were printed by claude 2.1.332 (`-p ...
--output-format stream-json --verbose`, some with `--include-partial-messages`)
talking to a local fake Messages API; only paths were rewritten. Most tests give the parser
no price function, so USD during the run is 0.0 and the result line's figure arrives
as one correction; the priced path is tested with a table price. `malformed_and_unknown.jsonl`
is hand-written (older CLI shape, multi-block messages, garbage lines, a priced model).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from claude_support import DATA
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.agents.base import (
    AgentEvent,
    AgentFailed,
    Done,
    Resumed,
    SessionStarted,
    TextDelta,
    ToolCall,
    ToolResult,
    Usage,
    Waiting,
)
from supervisor.agents.pricing import cost_usd, price_for
from supervisor.agents.stream_json import StreamJsonParser, parse_lines
from supervisor.agents.stream_json_lines import decode
from supervisor.agents.usage import Tokens


def lines_of(name: str) -> list[str]:
    return (DATA / name).read_text().splitlines()


def result_line(name: str) -> dict[str, Any]:
    obj = decode(lines_of(name)[-1])
    assert obj is not None
    assert obj["type"] == "result"
    return obj


def usages(events: list[AgentEvent]) -> list[Usage]:
    return [e for e in events if isinstance(e, Usage)]


def token_sum(events: list[AgentEvent]) -> Tokens:
    total = Tokens()
    for u in usages(events):
        total = total + Tokens(
            u.input_tokens, u.output_tokens, u.cache_creation_tokens, u.cache_read_tokens
        )
    return total


def usd_sum(events: list[AgentEvent]) -> float:
    parts = [u.usd for u in usages(events)]
    assert all(p is not None for p in parts), "CLI usage must carry explicit USD"
    return math.fsum(p for p in parts if p is not None)


def assistant_text(events: list[AgentEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta) and e.stream == "assistant")


def raw_lines(events: list[AgentEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta) and e.stream == "raw"]


def sonnet_price(model: str | None) -> Any:
    return price_for(model)


# -- success ------------------------------------------------------------------------


def test_success_with_tool_use() -> None:
    events = parse_lines(lines_of("success_tool_use.jsonl"))
    res = result_line("success_tool_use.jsonl")
    sid = res["session_id"]

    assert events[0] == SessionStarted(sid)
    init = events[1]
    assert isinstance(init, TextDelta)
    assert init.stream == "raw"
    assert "model claude-opus-5-5" in init.text
    assert "cwd /work/demo" in init.text
    assert "Write" in init.text

    calls = [e for e in events if isinstance(e, ToolCall)]
    assert calls == [
        ToolCall("toolu_1", "Write", {"file_path": "/work/demo/hello.txt", "content": "hello\n"})
    ]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert len(results) == 1
    assert results[0].tool_id == "toolu_1"
    assert results[0].output.startswith("File created successfully at: /work/demo/hello.txt")
    assert not results[0].is_error
    assert events.index(calls[0]) < events.index(results[0])

    assert assistant_text(events) == "I'll write the file. \nDone: hello.txt written. "
    assert events[-1] == Done(
        output="Done: hello.txt written. ", session_id=sid, stop_reason="success"
    )

    # Usage: deltas summing exactly to the result's totals, USD to total_cost_usd.
    usage = res["usage"]
    assert token_sum(events) == Tokens(
        usage["input_tokens"],
        usage["output_tokens"],
        usage["cache_creation_input_tokens"],
        usage["cache_read_input_tokens"],
    )
    assert token_sum(events) == Tokens(203, 43, 14, 6)
    assert usd_sum(events) == pytest.approx(res["total_cost_usd"], rel=1e-12, abs=0)
    # Without partial messages, the assistant lines only carry message_start usage
    # (output_tokens = 1): the real output count comes with the result.
    last = usages(events)[-1]
    assert (last.input_tokens, last.output_tokens) == (0, 41)
    assert all(u.model == "claude-opus-5-5" for u in usages(events))


def test_usage_is_counted_once_per_message_id() -> None:
    lines = lines_of("success_tool_use.jsonl")
    # msg_1 is printed twice by the CLI (one line per content block): counted once.
    msg1 = [line for line in lines if '"id":"msg_1"' in line]
    assert len(msg1) == 2
    parser = StreamJsonParser()
    first = usages(parser.feed(msg1[0]))
    assert [(u.input_tokens, u.output_tokens) for u in first] == [(101, 1)]
    assert usages(parser.feed(msg1[1])) == []
    assert usages(parser.feed(msg1[0])) == []
    assert parser.seen == Tokens(101, 1, 7, 3)


def test_partial_messages_stream_text_once_and_count_output_while_running() -> None:
    lines = lines_of("partial_messages.jsonl")
    res = result_line("partial_messages.jsonl")
    events = parse_lines(lines)

    deltas = [e.text for e in events if isinstance(e, TextDelta) and e.stream == "assistant"]
    assert deltas[:4] == ["I'll ", "write ", "the ", "file. "]
    # The complete assistant lines repeat the text: not shown twice.
    assert assistant_text(events) == "I'll write the file. \nDone: hello.txt written. "
    assert [e.name for e in events if isinstance(e, ToolCall)] == ["Write"]
    assert raw_lines(events)[1:] == []  # system/status lines are dropped, not raw

    # Before the result line, message_delta already brought the real output counts.
    parser = StreamJsonParser()
    for line in lines[:-1]:
        parser.feed(line)
    assert parser.seen == Tokens(203, 43, 14, 6)
    final = usages(parser.feed(lines[-1]))
    assert len(final) == 1
    assert final[0].tokens == 0
    assert final[0].usd == pytest.approx(res["total_cost_usd"], rel=1e-12)
    assert token_sum(events) == Tokens(203, 43, 14, 6)
    assert usd_sum(events) == pytest.approx(res["total_cost_usd"], rel=1e-12, abs=0)
    assert isinstance(events[-1], Done)


# -- retries and errors ---------------------------------------------------------------


def test_api_retry_waits_then_resumes() -> None:
    events = parse_lines(lines_of("api_retry_then_success.jsonl"))
    waits = [e for e in events if isinstance(e, Waiting)]
    assert len(waits) == 1
    assert waits[0].seconds == pytest.approx(1.219)
    assert waits[0].retry is False  # the CLI retries by itself
    assert "429" in waits[0].reason
    assert "1/10" in waits[0].reason
    after = events[events.index(waits[0]) + 1]
    assert after == Resumed()
    assert sum(isinstance(e, Resumed) for e in events) == 1
    done = events[-1]
    assert isinstance(done, Done)
    assert done.stop_reason == "success"
    res = result_line("api_retry_then_success.jsonl")
    assert token_sum(events).input == res["usage"]["input_tokens"]
    assert usd_sum(events) == pytest.approx(res["total_cost_usd"], rel=1e-12)


def test_api_error_429_after_cli_retries_is_retryable() -> None:
    events = parse_lines(lines_of("api_error_429.jsonl"))
    waits = [e for e in events if isinstance(e, Waiting)]
    assert [w.seconds for w in waits] == [pytest.approx(1.239), pytest.approx(1.235)]
    assert all(not w.retry for w in waits)
    # The CLI's synthetic "API Error" message is shown, but it costs nothing.
    assert "API Error: Request rejected (429)" in assistant_text(events)
    assert usages(events) == []
    failed = events[-1]
    assert isinstance(failed, AgentFailed)
    assert failed.retryable
    assert "429" in failed.message
    assert "slow down" in failed.message


def test_api_error_500_is_retryable() -> None:
    failed = parse_lines(lines_of("api_error_500.jsonl"))[-1]
    assert isinstance(failed, AgentFailed)
    assert failed.retryable
    assert "API error 500" in failed.message


def test_api_error_401_is_not_retryable() -> None:
    failed = parse_lines(lines_of("api_error_401.jsonl"))[-1]
    assert isinstance(failed, AgentFailed)
    assert not failed.retryable
    assert "401" in failed.message
    assert "Invalid API key" in failed.message


def test_error_max_turns_ends_the_iteration_normally() -> None:
    events = parse_lines(lines_of("error_max_turns.jsonl"))
    res = result_line("error_max_turns.jsonl")
    done = events[-1]
    assert isinstance(done, Done)
    assert done.stop_reason == "error_max_turns"
    assert done.output == "I'll write the file. "  # no `result` field: last assistant text
    assert token_sum(events) == Tokens.from_api(res["usage"])
    assert usd_sum(events) == pytest.approx(res["total_cost_usd"], rel=1e-12)


@pytest.mark.parametrize(
    ("subtype", "extra", "retryable"),
    [
        ("error_during_execution", {}, True),
        ("error_something_new", {}, True),
        ("success", {"api_error_status": 529, "terminal_reason": "api_error"}, True),
        ("success", {"api_error_status": 400, "terminal_reason": "api_error"}, False),
    ],
)
def test_error_subtypes(subtype: str, extra: dict[str, Any], retryable: bool) -> None:
    line = json.dumps(
        {"type": "result", "subtype": subtype, "is_error": True, "session_id": "s", **extra}
    )
    failed = parse_lines([line])[-1]
    assert isinstance(failed, AgentFailed)
    assert failed.retryable is retryable


def test_resume_of_an_unknown_session_fails_before_init() -> None:
    parser = StreamJsonParser()
    events: list[AgentEvent] = []
    for line in lines_of("resume_not_found.jsonl"):
        events += parser.feed(line)
    assert parser.init is None
    assert usages(events) == []
    failed = parser.finish(1)
    assert isinstance(failed, AgentFailed)
    assert failed.retryable
    assert "error_during_execution" in failed.message
    assert "No conversation found with session ID" in failed.message


def test_max_budget_usd_is_a_cap_like_max_turns() -> None:
    line = json.dumps(
        {"type": "result", "subtype": "error_max_budget_usd", "is_error": True, "session_id": "s"}
    )
    done = parse_lines([line])[-1]
    assert done == Done(output="", session_id="s", stop_reason="error_max_budget_usd")


def test_no_result_line_fails_with_exit_code_and_stderr() -> None:
    parser = StreamJsonParser()
    parser.feed(lines_of("success_tool_use.jsonl")[0])
    failed = parser.finish(1, "Error: something broke\n")
    assert isinstance(failed, AgentFailed)
    assert failed.retryable
    assert "exited 1" in failed.message
    assert "something broke" in failed.message
    killed = StreamJsonParser().finish(None)
    assert isinstance(killed, AgentFailed)
    assert "was killed" in killed.message


# -- resume: total_cost_usd is cumulative over the session --------------------------------


def test_resumed_session_charges_this_invocation_only() -> None:
    lines = lines_of("resumed_session.jsonl")
    res = result_line("resumed_session.jsonl")
    this_call = res["model_usage_since_last_result"]["claude-opus-5-5"]["costUSD"]
    assert res["total_cost_usd"] > this_call  # cumulative: includes the previous run
    events = parse_lines(lines)
    assert usd_sum(events) == pytest.approx(this_call, rel=1e-12)
    assert token_sum(events) == Tokens.from_api(res["usage"]) == Tokens(101, 21, 7, 3)


def test_resumed_session_fallback_without_since_last_uses_the_baseline() -> None:
    lines = lines_of("resumed_session.jsonl")
    res = json.loads(lines[-1])
    del res["model_usage_since_last_result"]
    lines[-1] = json.dumps(res)
    previous = result_line("success_tool_use.jsonl")["total_cost_usd"]
    events = parse_lines(lines, usd_baseline=previous)
    assert usd_sum(events) == pytest.approx(res["total_cost_usd"] - previous, rel=1e-9)
    # Unknown baseline (e.g. after a supervisor restart): the whole figure, the safe side.
    assert usd_sum(parse_lines(lines)) == pytest.approx(res["total_cost_usd"], rel=1e-12)


# -- garbage never crashes --------------------------------------------------------------


def test_malformed_and_unknown_lines_are_kept_raw() -> None:
    lines = lines_of("malformed_and_unknown.jsonl")
    res = result_line("malformed_and_unknown.jsonl")
    events = parse_lines(lines, price=sonnet_price)
    raw = raw_lines(events)
    assert raw[0].startswith("claude 2.0.14 session")
    kept = raw[1:]
    assert len(kept) == 6
    assert '"rate_limit_event"' in kept[0]
    assert '"compact_boundary"' in kept[1]
    assert kept[2] == "npm WARN this is not JSON at all\n"
    assert kept[3] == '{"type":"assistant","message":{"id":"msg_0\n'
    assert kept[4] == "[1, 2, 3]\n"
    assert "not an object" in kept[5]

    assert [e for e in events if isinstance(e, ToolCall)] == [
        ToolCall("toolu_01A", "Bash", {"command": "ls missing"})
    ]
    [result] = [e for e in events if isinstance(e, ToolResult)]
    assert result.is_error
    assert "No such file or directory" in result.output
    assert assistant_text(events) == "Checking the files.\nAll done."

    # Priced model: every running delta carries the table price explicitly...
    price = price_for("claude-sonnet-4-5-20250929")
    assert price is not None
    first = usages(events)[0]
    assert first.usd == pytest.approx(
        cost_usd(
            price,
            input_tokens=1200,
            output_tokens=1,
            cache_creation_tokens=300,
            cache_read_tokens=4000,
        )
    )
    # ...and the result settles tokens and USD exactly (older CLI: usage + total_cost_usd).
    assert token_sum(events) == Tokens.from_api(res["usage"]) == Tokens(2500, 180, 300, 8300)
    assert usd_sum(events) == pytest.approx(0.0123, rel=1e-12)
    assert events[-1] == Done("All done.", session_id=res["session_id"], stop_reason="success")


def test_usd_correction_may_be_negative_when_our_price_is_dearer() -> None:
    lines = lines_of("malformed_and_unknown.jsonl")
    res = json.loads(lines[-1])
    res["total_cost_usd"] = 0.0001  # cheaper than what the table charged while running
    lines[-1] = json.dumps(res)
    events = parse_lines(lines, price=sonnet_price)
    assert usages(events)[-1].usd is not None
    assert (usages(events)[-1].usd or 0.0) < 0
    assert usd_sum(events) == pytest.approx(0.0001, rel=1e-9)


def test_side_calls_of_other_models_are_charged_from_the_result() -> None:
    lines = lines_of("success_tool_use.jsonl")
    res = json.loads(lines[-1])
    haiku = {
        "inputTokens": 500,
        "outputTokens": 12,
        "cacheReadInputTokens": 0,
        "cacheCreationInputTokens": 0,
        "costUSD": 0.00056,
    }
    res["model_usage_since_last_result"]["claude-haiku-4-5"] = haiku
    lines[-1] = json.dumps(res)
    events = parse_lines(lines)
    main = res["model_usage_since_last_result"]["claude-opus-5-5"]
    assert token_sum(events) == Tokens(203 + 500, 43 + 12, 14, 6)
    assert usd_sum(events) == pytest.approx(main["costUSD"] + 0.00056, rel=1e-12)


def test_tokens_are_never_corrected_downwards() -> None:
    lines = lines_of("success_tool_use.jsonl")
    res = json.loads(lines[-1])
    res["usage"]["input_tokens"] = 5  # less than the messages showed
    del res["model_usage_since_last_result"]
    lines[-1] = json.dumps(res)
    events = parse_lines(lines)
    assert all(
        min(u.input_tokens, u.output_tokens, u.cache_creation_tokens, u.cache_read_tokens) >= 0
        for u in usages(events)
    )
    assert token_sum(events) == Tokens(203, 43, 14, 6)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
line_types = st.sampled_from(["system", "assistant", "user", "stream_event", "result", "other"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=40),
            st.builds(
                lambda t, body: json.dumps({**body, "type": t}),
                line_types,
                st.dictionaries(
                    st.sampled_from(
                        [
                            "subtype",
                            "message",
                            "event",
                            "usage",
                            "session_id",
                            "content",
                            "model_usage_since_last_result",
                            "total_cost_usd",
                            "api_message_id",
                        ]
                    ),
                    json_values,
                    max_size=4,
                ),
            ),
        ),
        max_size=12,
    )
)
def test_arbitrary_lines_never_crash(lines: list[str]) -> None:
    events = parse_lines(lines, price=sonnet_price)
    assert isinstance(events[-1], Done | AgentFailed)
    assert all(u.tokens >= 0 for u in usages(events))
