"""The `codex exec --json` parser on lines recorded from the real CLI (codex-cli 0.169.0
against tests/fake_openai.py; tests/data/codex/), and the `kind = "codex"` table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from helpers import TESTS, load, loop, supervisor_table, table

from supervisor.agents import AgentContext, build_agent
from supervisor.agents.base import (
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
from supervisor.agents.codex import CodexAgent
from supervisor.agents.codex_json import CodexJsonParser, parse_lines, session_total
from supervisor.agents.kinds.codex import CodexAgentSpec
from supervisor.agents.registry import KINDS
from supervisor.agents.usage import Tokens
from supervisor.config.load import ConfigError
from supervisor.spec import LoopSpec, Price

DATA = TESTS / "data" / "codex"


def lines(name: str) -> list[str]:
    return (DATA / name).read_text().splitlines()


def usage_sum(events: Sequence[object]) -> Tokens:
    total = Tokens()
    for e in events:
        if isinstance(e, Usage):
            total = total + Tokens(
                e.input_tokens, e.output_tokens, e.cache_creation_tokens, e.cache_read_tokens
            )
    return total


def test_a_turn_with_a_command_and_a_patch() -> None:
    events = parse_lines(lines("tools.jsonl"))
    [started] = [e for e in events if isinstance(e, SessionStarted)]
    assert started.session_id == "01a2377e-75d3-7f61-89cc-f23e0b2c85d6"
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [(c.tool_id, c.name) for c in calls] == [("item_1", "shell"), ("item_2", "apply_patch")]
    assert calls[0].input == {"command": "/bin/bash -lc 'echo hi > hello.txt && cat hello.txt'"}
    assert calls[1].input == {"changes": [{"path": "/tmp/a16/rws/notes.txt", "kind": "add"}]}
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [(r.tool_id, r.output, r.is_error) for r in results] == [
        ("item_1", "hi\n", False),
        ("item_2", "add /tmp/a16/rws/notes.txt", False),
    ]
    said = "".join(e.text for e in events if isinstance(e, TextDelta) and e.stream == "assistant")
    assert said == "I'll write it.\nDone: hello.txt and notes.txt."
    # turn.completed: 28,587 input (50 of them cached), 43 output (3 of them reasoning).
    assert usage_sum(events) == Tokens(input=28_537, output=43, cache_read=50)
    done = events[-1]
    assert isinstance(done, Done)
    assert done.output == "Done: hello.txt and notes.txt."
    assert done.session_id == started.session_id


def test_a_resumed_turn_charges_only_what_it_added_to_the_thread() -> None:
    first = parse_lines(lines("first.jsonl"))
    assert usage_sum(first) == Tokens(input=9_387, output=2)
    # turn.completed after `codex exec resume` counts the whole thread (18,853 in).
    resumed = parse_lines(lines("resumed.jsonl"), baseline=usage_sum(first))
    assert usage_sum(resumed) == Tokens(input=18_853 - 9_387, output=2)
    assert isinstance(resumed[-1], Done)
    assert resumed[-1].output == "Second answer."


def test_usage_is_priced_with_cached_input_at_the_cache_read_rate() -> None:
    price = Price(input=2.0, output=10.0, cache_write=2.5, cache_read=0.1)
    events = parse_lines(lines("tools.jsonl"), price=lambda model: price, model="m")
    [usage] = [e for e in events if isinstance(e, Usage)]
    assert usage.model == "m"
    assert usage.usd == pytest.approx((28_537 * 2.0 + 43 * 10.0 + 50 * 0.1) / 1e6)


def test_session_file_totals_are_charged_as_they_arrive_and_never_twice() -> None:
    """The session file's token_count lines (thread totals after each response) charge
    the turn while it runs; turn.completed then adds nothing already charged."""
    totals = [session_total(line) for line in lines("session_token_counts.jsonl")]
    assert [m for _, m in totals if m] == ["gpt-5.5", "gpt-5.5"]
    counts = [t for t, _ in totals if t is not None]
    assert counts == [Tokens(input=9_387, output=2), Tokens(input=18_853, output=4)]
    parser = CodexJsonParser(baseline=counts[0])
    assert parser.observe_total(counts[0]) == []  # the earlier turn: not this one's
    [usage] = parser.observe_total(counts[1])
    assert isinstance(usage, Usage)
    assert (usage.input_tokens, usage.output_tokens) == (9_466, 2)
    events = [e for line in lines("resumed.jsonl") for e in parser.feed(line)]
    assert not [e for e in events if isinstance(e, Usage)]


def test_cli_retries_are_waits_and_a_failed_turn_fails() -> None:
    parser = CodexJsonParser()
    wait = parser.feed('{"type":"error","message":"Reconnecting... 2/5 (stream disconnected)"}')
    assert wait == [Waiting("codex: Reconnecting... 2/5 (stream disconnected)", retry=False)]
    assert parser.feed(
        '{"type":"turn.failed","error":{"message":"unexpected status 401 Unauthorized: bad key"}}'
    ) == [Resumed()]
    final = parser.finish(1)
    assert isinstance(final, AgentFailed)
    assert final.message == "codex: unexpected status 401 Unauthorized: bad key"
    assert not final.retryable  # a bad key does not get better by retrying


def test_no_turn_end_is_a_retryable_failure_with_stderr() -> None:
    parser = CodexJsonParser()
    parser.feed('{"type":"thread.started","thread_id":"t1"}')
    final = parser.finish(None, "boom")
    assert isinstance(final, AgentFailed)
    assert final.retryable
    assert final.message == "codex was killed without finishing its turn: boom"


def test_unknown_lines_are_kept_raw() -> None:
    parser = CodexJsonParser()
    [raw] = parser.feed("not json")
    assert isinstance(raw, TextDelta)
    assert raw.stream == "raw"


def test_command_line_for_a_new_and_a_resumed_turn(tmp_path: Path) -> None:
    spec = CodexAgentSpec(name="cx", model="gpt-5.5", args=("--ephemeral",))
    loop_spec = LoopSpec(name="l", agent="cx", prompt="p", workspace=tmp_path, context="continue")
    agent = build_agent(spec, loop_spec, AgentContext(state_dir=tmp_path))
    assert isinstance(agent, CodexAgent)
    argv, stdin = agent.command("-do it")
    assert argv == [
        "codex", "exec", "--json", "--skip-git-repo-check", "-m", "gpt-5.5",
        "-c", 'sandbox_mode="workspace-write"', "--ephemeral", "--", "-do it",
    ]  # fmt: skip
    assert stdin is None
    argv, stdin = agent.command("x" * 200_000, resume="t1")
    assert argv[:3] == ["codex", "exec", "resume"]
    assert argv[-3:] == ["t1", "--", "-"]
    assert stdin == b"x" * 200_000
    assert KINDS["codex"].resume_argv is not None
    assert KINDS["codex"].resume_argv(spec, "t1") == ("codex", "resume", "t1")


def test_config_reads_a_codex_agent_and_rejects_an_unknown_sandbox(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        table("agents.cx", kind="codex", model="gpt-6.1-sol", sandbox="read-only", stall="2m"),
        loop("l", "cx", done_marker="DONE"),
    )
    spec = config.agents["cx"]
    assert isinstance(spec, CodexAgentSpec)
    assert (spec.model, spec.sandbox, spec.stall) == ("gpt-6.1-sol", "read-only", 120.0)
    with pytest.raises(ConfigError) as err:
        load(
            tmp_path,
            supervisor_table(),
            table("agents.cx", kind="codex", sandbox="anything"),
            loop("l", "cx", done_marker="DONE"),
        )
    assert "sandbox" in str(err.value)


def test_the_child_gets_the_provider_keys_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-o")
    monkeypatch.setenv("CODEX_API_KEY", "sk-c")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-a")
    monkeypatch.setenv("GEMINI_API_KEY", "g")
    spec = CodexAgentSpec(name="cx")
    loop_spec = LoopSpec(name="l", agent="cx", prompt="p", workspace=tmp_path)
    agent = build_agent(spec, loop_spec, AgentContext(state_dir=tmp_path))
    assert isinstance(agent, CodexAgent)
    env = agent._env({})
    assert env["OPENAI_API_KEY"] == "sk-o"
    assert env["CODEX_API_KEY"] == "sk-c"
    assert "ANTHROPIC_API_KEY" not in env
    assert "GEMINI_API_KEY" not in env


def test_a_response_is_charged_from_its_usage_record_before_its_tool_calls_ran() -> None:
    """In the session file of a turn with two commands (recorded from codex-cli 0.169.0)
    each response's `token_usage_record` comes before its command's output, and the
    `token_count` event only after it: the record alone already carries the thread's
    running total, and the later token_count charges nothing again."""
    recorded = lines("session_tool_turn.jsonl")
    kinds = []
    for line in recorded:
        obj = json.loads(line)
        kinds.append(obj["type"] if obj["type"] != "response_item" else obj["payload"]["type"])
    assert kinds[1:8] == [
        "function_call",
        "token_usage_record",
        "function_call_output",
        "event_msg",
        "function_call",
        "token_usage_record",
        "function_call_output",
    ]
    parser = CodexJsonParser()
    charged = []
    for line in recorded[:7]:  # up to the second response's record, before its command ends
        total, _model = session_total(line)
        if total is not None:
            charged += [e for e in parser.observe_total(total) if isinstance(e, Usage)]
    assert [u.input_tokens + u.output_tokens for u in charged] == [9_398, 9_519]
    for line in recorded[7:]:
        total, _model = session_total(line)
        if total is not None:
            charged += [e for e in parser.observe_total(total) if isinstance(e, Usage)]
    assert [u.input_tokens + u.output_tokens for u in charged] == [9_398, 9_519, 9_619]
