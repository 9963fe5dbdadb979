"""The `gemini --output-format stream-json` parser on lines recorded from the real CLI
(gemini-cli 0.61.0 against tests/fake_gemini.py; tests/data/gemini/), and the
`kind = "gemini"` table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from helpers import TESTS, load, loop, run_cli, supervisor_table, table, write_config

from supervisor.agents import AgentContext, build_agent
from supervisor.agents.base import (
    AgentEvent,
    AgentFailed,
    Done,
    SessionStarted,
    TextDelta,
    ToolCall,
    ToolResult,
    Usage,
)
from supervisor.agents.gemini import GeminiAgent
from supervisor.agents.gemini_json import GeminiJsonParser, session_message
from supervisor.agents.kinds.gemini import GeminiAgentSpec, binary
from supervisor.agents.pricing import PRICES
from supervisor.agents.registry import KINDS
from supervisor.agents.usage import Tokens
from supervisor.config.load import ConfigError
from supervisor.spec import LoopSpec, Price

DATA = TESTS / "data" / "gemini"


def parse(name: str, **kw: object) -> list[AgentEvent]:
    parser = GeminiJsonParser(**kw)  # type: ignore[arg-type]
    events = [e for line in (DATA / name).read_text().splitlines() for e in parser.feed(line)]
    return [*events, parser.finish(0)]


def usage_sum(events: Sequence[object]) -> Tokens:
    total = Tokens()
    for e in events:
        if isinstance(e, Usage):
            total = total + Tokens(
                e.input_tokens, e.output_tokens, e.cache_creation_tokens, e.cache_read_tokens
            )
    return total


def test_a_turn_with_a_command_and_a_file_write() -> None:
    events = parse("tools.jsonl")
    [started] = [e for e in events if isinstance(e, SessionStarted)]
    assert started.session_id == "d77123b7-b603-4b8a-b773-957bb1f88445"
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [c.name for c in calls] == ["run_shell_command", "write_file"]
    assert calls[0].input == {"command": "echo hi > hello.txt && cat hello.txt"}
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [(r.tool_id, r.output, r.is_error) for r in results] == [
        (calls[0].tool_id, "hi", False),
        (calls[1].tool_id, "", False),
    ]
    said = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert said == "I'll write it.Done: hello.txt and notes.txt."
    # The result's stats: 37,053 prompt tokens (50 cached), 37,094 in all (38
    # candidates + 3 thoughts): charged once, at the end, all of it.
    [usage] = [e for e in events if isinstance(e, Usage)]
    assert usage.model == "gemini-2.5-flash"
    assert usage_sum(events) == Tokens(input=37_003, output=41, cache_read=50)
    done = events[-1]
    assert isinstance(done, Done)
    assert done.output == "Done: hello.txt and notes.txt."
    assert done.session_id == started.session_id


def test_usage_is_priced_per_model_with_the_routers_classifier_apart() -> None:
    """With the default model ("auto") the CLI first asks a small model which model to
    use; stats report both, and each is priced at its own price."""
    prices = {"gemini-3.8-flash": Price(input=1.0, output=2.0, cache_write=0, cache_read=0)}
    events = parse("auto.jsonl", price=prices.get, model="gemini-3.1-pro-preview")
    usages = {e.model: e for e in events if isinstance(e, Usage)}
    assert set(usages) == {"gemini-3.5-flash-lite", "gemini-3.8-flash"}
    assert usages["gemini-3.5-flash-lite"].usd == 0.0  # unpriced
    flash = usages["gemini-3.8-flash"]
    assert (flash.input_tokens, flash.output_tokens) == (12_020, 2)
    assert flash.usd == pytest.approx((12_020 * 1.0 + 2 * 2.0) / 1e6)


def test_a_resumed_turn_reports_only_its_own_requests() -> None:
    """`--resume` starts a new process: its stats count only the new turn's request
    (12,253 prompt tokens, the first exchange included in it), nothing is subtracted."""
    first = parse("first.jsonl")
    resumed = parse("resumed.jsonl")
    assert usage_sum(first) == Tokens(input=12_226, output=2)
    assert usage_sum(resumed) == Tokens(input=12_253, output=2)
    assert isinstance(resumed[-1], Done)
    assert resumed[-1].output == "Second answer."
    assert resumed[-1].session_id == first[-1].session_id  # type: ignore[union-attr]


def test_an_error_result_and_no_result_are_failures() -> None:
    parser = GeminiJsonParser()
    parser.feed('{"type":"error","severity":"error","message":"Invalid stream"}')
    parser.feed('{"type":"result","status":"error","stats":{}}')
    final = parser.finish(1)
    assert isinstance(final, AgentFailed)
    assert final.message == "gemini: Invalid stream"
    killed = GeminiJsonParser().finish(None, "boom")
    assert isinstance(killed, AgentFailed)
    assert killed.message == "gemini was killed without finishing its turn: boom"
    assert killed.retryable
    bad_key = GeminiJsonParser()
    bad_key.feed('{"type":"result","status":"error","error":{"message":"API key not valid"}}')
    assert not bad_key.finish(1).retryable  # type: ignore[union-attr]


def test_command_line_for_a_new_and_a_resumed_turn(tmp_path: Path) -> None:
    spec = GeminiAgentSpec(name="gm", model="gemini-2.5-flash", args=("--debug",))
    loop_spec = LoopSpec(name="l", agent="gm", prompt="p", workspace=tmp_path, context="continue")
    agent = build_agent(spec, loop_spec, AgentContext(state_dir=tmp_path))
    assert isinstance(agent, GeminiAgent)
    argv, stdin = agent.command("-do it")
    assert argv == [
        "gemini", "--output-format", "stream-json", "--skip-trust", "--approval-mode", "yolo",
        "-m", "gemini-2.5-flash", "--debug", "-p", "-do it",
    ]  # fmt: skip
    assert stdin is None
    argv, stdin = agent.command("x" * 200_000, resume="s1")
    assert argv[-5:] == ["--resume", "s1", "--debug", "-p", ""]
    assert stdin == b"x" * 200_000
    assert KINDS["gemini"].resume_argv is not None
    assert KINDS["gemini"].resume_argv(spec, "s1") == ("gemini", "--resume", "s1")
    assert binary(spec) == "gemini"
    assert "gemini-3.1-pro-preview" in PRICES


def test_config_reads_a_gemini_agent_and_rejects_an_unknown_approval_mode(
    tmp_path: Path,
) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        table("agents.gm", kind="gemini", model="gemini-2.5-flash", approval_mode="auto_edit"),
        loop("l", "gm", done_marker="DONE"),
    )
    spec = config.agents["gm"]
    assert isinstance(spec, GeminiAgentSpec)
    assert (spec.model, spec.approval_mode) == ("gemini-2.5-flash", "auto_edit")
    with pytest.raises(ConfigError) as err:
        load(
            tmp_path,
            supervisor_table(),
            table("agents.gm", kind="gemini", approval_mode="anything"),
            loop("l", "gm", done_marker="DONE"),
        )
    assert "approval_mode" in str(err.value)


def test_the_child_gets_the_gemini_key_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "g")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("GOOGLE_API_KEY", "gk")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-o")
    spec = GeminiAgentSpec(name="gm")
    loop_spec = LoopSpec(name="l", agent="gm", prompt="p", workspace=tmp_path)
    agent = build_agent(spec, loop_spec, AgentContext(state_dir=tmp_path))
    assert isinstance(agent, GeminiAgent)
    env = agent._env({})
    assert env["GEMINI_API_KEY"] == "g"
    assert env["GOOGLE_GEMINI_BASE_URL"] == "http://127.0.0.1:1"
    assert "GOOGLE_API_KEY" not in env
    assert "OPENAI_API_KEY" not in env


def test_the_session_file_charges_each_response_once_and_the_result_only_the_rest() -> None:
    """The CLI's session file (recorded from gemini-cli 0.61.0: two commands, then a
    text) holds each response's tokens as it lands, and the same response again once
    its tool calls are done: each is charged once. The `result` then adds nothing."""
    parser = GeminiJsonParser(model="gemini-2.5-flash")
    charged: list[int] = []
    for line in (DATA / "session_tool_turn.jsonl").read_text().splitlines():
        got = session_message(line)
        if got is not None:
            assert got[1] == "gemini-2.5-flash"
            for e in parser.observe_message(*got):
                assert isinstance(e, Usage)
                charged.append(e.input_tokens + e.output_tokens)
    assert charged == [12_229, 12_343, 12_449]
    stats = {
        "models": {
            "gemini-2.5-flash": {"total_tokens": 37_021, "input_tokens": 37_005, "cached": 0}
        }
    }
    assert parser.observe_stats(stats) == []
    # A classifier call the file does not show is charged at the end, under its model.
    stats["models"]["lite"] = {"total_tokens": 744, "input_tokens": 736, "cached": 0}
    [extra] = parser.observe_stats(stats)
    assert isinstance(extra, Usage)
    assert (extra.model, extra.input_tokens, extra.output_tokens) == ("lite", 736, 8)


def test_responses_of_earlier_turns_are_not_charged_again() -> None:
    parser = GeminiJsonParser()
    line = (
        '{"id":"m1","type":"gemini","content":"x","model":"g",'
        '"tokens":{"input":10,"output":2,"cached":4,"thoughts":1,"tool":0,"total":13}}'
    )
    got = session_message(line)
    assert got == ("m1", "g", Tokens(input=6, output=3, cache_read=4))
    parser.known_messages = {"m1"}
    assert parser.observe_message(*got) == []
    assert session_message('{"id":"u","type":"user","content":[]}') is None
    assert session_message('{"$set":{"lastUpdated":"x"}}') is None


def test_loopvisor_check_accepts_codex_and_gemini_loops(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    path = write_config(
        tmp_path,
        supervisor_table(usd=5.0),
        table("agents.cx", kind="codex", model="gpt-6.1-sol"),
        table("agents.gm", kind="gemini", model="gemini-2.5-flash", approval_mode="auto_edit"),
        loop("a", "cx", done_marker="DONE"),
        loop("b", "gm", done_marker="DONE"),
    )
    done = run_cli("check", path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "agent=cx(codex gpt-6.1-sol)" in done.stdout
    assert "agent=gm(gemini gemini-2.5-flash)" in done.stdout
