"""CodexAgent with the real Codex CLI (npm @openai/codex 0.169.0), offline: it talks to
the fake Responses API in tests/fake_openai.py through a model provider of its own
(`codex_args`), with HOME in tmp_path. Skipped when the CLI is not installed (found
through LOOPVISOR_CODEX_BIN, else .ci/node, else PATH); LOOPVISOR_REQUIRE_CODEX_CLI=1
(CI) makes them fail instead.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from claude_support import collect, make_budget, request, token_sum, usd_sum
from cli_bins import require_cli
from fake_openai import (
    FakeOpenAI,
    after_tool_output,
    codex_args,
    custom_call,
    function_call,
    hang,
    text,
)
from helpers import load, loop, run_recorded, supervisor_table, table

from supervisor import events as ev
from supervisor.agents import AgentContext, build_agent
from supervisor.agents.base import Done, TextDelta, ToolCall, ToolResult
from supervisor.agents.codex import CodexAgent
from supervisor.agents.kinds.codex import CodexAgentSpec
from supervisor.agents.pricing import PRICES, cost_usd
from supervisor.agents.usage import Tokens
from supervisor.spec import ContextMode, LoopSpec

pytestmark = pytest.mark.anyio

MODEL = "gpt-5.5"
"""A model for which codex 0.169.0 offers plain function tools (exec_command,
apply_patch); its default gpt-6.1-sol gets a JavaScript `exec` tool instead."""


@pytest.fixture
def codex() -> str:
    return require_cli("codex", "CODEX")


def offline_env(home: Path) -> dict[str, str]:
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "OPENAI_API_KEY": "sk-test-dummy"}


def make_agent(
    tmp_path: Path,
    workspace: Path,
    codex: str,
    server: FakeOpenAI,
    *,
    context: ContextMode = "fresh",
) -> CodexAgent:
    spec = CodexAgentSpec(
        name="cx",
        command=codex,
        model=MODEL,
        args=tuple(codex_args(server)),
        env=offline_env(tmp_path / "home"),
        timeout=120,
        stall=60,
    )
    loop_spec = LoopSpec(name="demo", agent="cx", prompt="p", workspace=workspace, context=context)
    agent = build_agent(spec, loop_spec, AgentContext(state_dir=tmp_path / "state"))
    assert isinstance(agent, CodexAgent)
    return agent


def server_tokens(server: FakeOpenAI) -> Tokens:
    t = server.totals
    return Tokens(
        input=t.input_tokens - t.cached_input_tokens,
        output=t.output_tokens,
        cache_read=t.cached_input_tokens,
    )


def first_call(body: Mapping[str, Any]) -> bool:
    return not after_tool_output(body)


def tool_outputs(body: Mapping[str, Any]) -> int:
    items = body.get("input") or []
    return sum(
        1 for i in items if i.get("type") in ("function_call_output", "custom_tool_call_output")
    )


@pytest.mark.codex_cli
def test_real_codex_version(codex: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [codex, "--version"],
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["codex-cli", "0.169.0"]


@pytest.mark.codex_cli
async def test_real_codex_runs_a_command_and_a_patch_and_usage_matches_the_server(
    tmp_path: Path, codex: str, workspace: Path
) -> None:
    replies = [
        function_call(
            "exec_command",
            {"cmd": "echo hi > hello.txt && cat hello.txt"},
            preface="I'll write it.",
            when=lambda b: tool_outputs(b) == 0,
        ),
        custom_call(
            "apply_patch",
            "*** Begin Patch\n*** Add File: notes.txt\n+some notes\n*** End Patch\n",
            when=lambda b: tool_outputs(b) == 1,
        ),
        text("Done: hello.txt and notes.txt.", cached=50, reasoning=3),
    ]
    with FakeOpenAI(replies) as server:
        agent = make_agent(tmp_path, workspace, codex, server)
        budget = make_budget()
        events = await collect(agent, request(workspace, budget, "Create hello.txt"))
        requests = server.response_requests()

    done = events[-1]
    assert isinstance(done, Done), done
    assert done.output == "Done: hello.txt and notes.txt."
    assert done.session_id is not None
    assert agent.session_id == done.session_id
    assert (workspace / "hello.txt").read_text() == "hi\n"
    assert (workspace / "notes.txt").read_text() == "some notes\n"
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [c.name for c in calls] == ["shell", "apply_patch"]
    assert "echo hi > hello.txt" in calls[0].input["command"]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [r.tool_id for r in results] == [c.tool_id for c in calls]
    assert results[0].output == "hi\n"
    assert not any(r.is_error for r in results)
    said = "".join(e.text for e in events if isinstance(e, TextDelta) and e.stream == "assistant")
    assert "I'll write it." in said
    assert len(requests) == 3
    assert server.pending == 0
    # Authenticated with the key from the child's environment (the allow-list passed it).
    assert requests[0].headers["authorization"] == "Bearer sk-test-dummy"
    # Every token the server billed was charged, no more, and priced (no USD price for
    # gpt-5.5 in the table: the cost is 0 unless [pricing] gives one).
    assert token_sum(events) == server_tokens(server)
    assert budget.ledger.tokens_spent == server.totals.tokens
    assert usd_sum(events) == 0.0


@pytest.mark.codex_cli
async def test_real_codex_resumes_the_thread_and_charges_only_the_new_turn(
    tmp_path: Path, codex: str, workspace: Path
) -> None:
    with FakeOpenAI([text("First answer."), text("Second answer.")]) as server:
        agent = make_agent(tmp_path, workspace, codex, server, context="continue")
        budget = make_budget()
        first = await collect(agent, request(workspace, budget, "Say something."))
        before = server_tokens(server)
        thread = agent.session_id
        # A supervisor restart between the turns: the thread's totals so far are read
        # back from Codex's session file, not charged again.
        agent.restore(thread, None)
        second = await collect(agent, request(workspace, budget, "Again.", iteration=2))
        after = server_tokens(server)
        last = server.response_requests()[-1].body

    assert isinstance(first[-1], Done)
    assert isinstance(second[-1], Done)
    assert thread is not None
    assert second[-1].session_id == thread
    assert second[-1].output == "Second answer."
    history = json.dumps(last["input"])
    assert "First answer." in history
    assert "Say something." in history
    assert token_sum(first) == before
    assert token_sum(first) + token_sum(second) == after
    assert budget.ledger.tokens_spent == after.total


def cx_table(codex: str, server: FakeOpenAI, home: Path, **extra: object) -> str:
    return table(
        "agents.cx",
        kind="codex",
        command=codex,
        model=MODEL,
        args=codex_args(server),
        env=offline_env(home),
        timeout="2m",
        stall="1m",
        **extra,
    )


@pytest.mark.codex_cli
@pytest.mark.timeout(120)
async def test_real_codex_crossing_the_budget_is_killed_after_the_response_that_crossed(
    tmp_path: Path, codex: str
) -> None:
    """The second response of the turn crosses the loop's token limit. Codex records its
    usage in the session file as it lands, before running its command (sleep 60), and
    the turn is killed there. The bound asserted is the documented one: the response
    that crossed is the last one charged; a request Codex may already have sent for the
    next response is cut off unanswered. The server holds such a third request (a
    `hang`: nothing billed) instead of answering, so the outcome does not depend on
    how fast the kill lands; a turn that was never killed would hang there until the
    stall watchdog ends it, and the asserts below fail."""
    marker = tmp_path / "slept"
    replies = [
        function_call("exec_command", {"cmd": "echo one"}, when=lambda b: tool_outputs(b) == 0),
        function_call(
            "exec_command",
            {"cmd": f"sleep 60 && touch {marker}", "yield_time_ms": 30_000},
            when=lambda b: tool_outputs(b) == 1,
        ),
    ]
    with FakeOpenAI(replies, default=hang(100)) as server:
        # A request is ~9.4k input tokens: the first fits, the second crosses.
        limit = 12_000
        config = load(
            tmp_path,
            supervisor_table(tokens=limit),
            cx_table(codex, server, tmp_path / "home"),
            loop("hello", "cx", max_iterations=3, done_marker="DONE"),
        )
        rec = await run_recorded(config, timeout=100)
        billed = server.totals
        requests = server.response_requests()

    result = rec.result("hello")
    assert result.state == "exhausted", result.reason
    assert "crossed mid-turn" in result.reason
    assert result.iterations == 1
    assert billed.responses == 2  # the crossing response was the last one answered
    assert [r.reply for r in requests[2:]] in ([], ["hang"])  # at most one cut off
    charged = sum(u.tokens for u in rec.of(ev.UsageCharged, "hello"))
    assert result.tokens == charged == billed.tokens
    crossing = requests[1].usage["total_tokens"]
    assert charged - crossing <= limit < charged  # the overshoot: that one response
    # Charged before Codex reported the crossing response's command (it records the
    # usage before it runs the tools), not when the command ended or yielded.
    seen = [e for e in rec.events if isinstance(e, (ev.UsageCharged, ev.ToolCalled))]
    running = 0
    for e in seen:
        if isinstance(e, ev.UsageCharged):
            running += e.tokens
            if running > limit:
                break
        else:
            assert "sleep 60" not in json.dumps(e.input), "the crossing was seen late"
    assert running > limit
    assert not marker.exists()  # the command died with the process group


@pytest.mark.codex_cli
async def test_real_codex_loop_prices_the_default_model(tmp_path: Path, codex: str) -> None:
    """Without `model` the CLI asks for its default (gpt-6.1-sol), which the price table
    knows: the loop's USD is that price applied to what the server billed."""
    with FakeOpenAI([text("All done. DONE", cached=100)]) as server:
        config = load(
            tmp_path,
            supervisor_table(usd=5.0),
            cx_table(codex, server, tmp_path / "home").replace(f'model = "{MODEL}"\n', ""),
            loop("hello", "cx", max_iterations=1, done_marker="DONE"),
        )
        rec = await run_recorded(config, timeout=100)
        [req] = server.response_requests()

    assert req.body["model"] == "gpt-6.1-sol"
    result = rec.result("hello")
    assert result.state == "succeeded", result.reason
    t = server.totals
    assert result.tokens == t.tokens
    expected = cost_usd(
        PRICES["gpt-6.1-sol"],
        input_tokens=t.input_tokens - t.cached_input_tokens,
        output_tokens=t.output_tokens,
        cache_read_tokens=t.cached_input_tokens,
    )
    assert result.usd == pytest.approx(expected, rel=1e-9)
