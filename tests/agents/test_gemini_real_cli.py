"""GeminiAgent with the real Gemini CLI (npm @google/gemini-cli 0.61.0), offline: it
talks to the fake Gemini API in tests/fake_gemini.py (GOOGLE_GEMINI_BASE_URL, an API
key, `gemini_settings()` in a HOME under tmp_path). Skipped when the CLI is not
installed (found through LOOPVISOR_GEMINI_BIN, else .ci/node, else PATH);
LOOPVISOR_REQUIRE_GEMINI_CLI=1 (CI) makes them fail instead. The Node bundle takes
5-30 s to start on a loaded machine: hence the long timeouts.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from claude_support import collect, make_budget, request, token_sum
from cli_bins import require_cli
from fake_gemini import (
    FakeGemini,
    Totals,
    function_call,
    function_responses,
    gemini_settings,
    hang,
    text,
)
from helpers import load, loop, run_recorded, supervisor_table, table

from supervisor import events as ev
from supervisor.agents import AgentContext, build_agent
from supervisor.agents.base import Done, TextDelta, ToolCall, ToolResult
from supervisor.agents.gemini import GeminiAgent
from supervisor.agents.kinds.gemini import GeminiAgentSpec
from supervisor.agents.usage import Tokens
from supervisor.spec import ContextMode, LoopSpec

pytestmark = pytest.mark.anyio

MODEL = "gemini-2.5-flash"
"""A fixed model: no router classifier call before each turn (as with "auto")."""


@pytest.fixture
def gemini() -> str:
    return require_cli("gemini", "GEMINI")


def offline_env(home: Path, server: FakeGemini) -> dict[str, str]:
    (home / ".gemini").mkdir(parents=True, exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(gemini_settings()))
    return {
        "HOME": str(home),
        "GEMINI_API_KEY": "test-gemini-key",
        "GOOGLE_GEMINI_BASE_URL": server.base_url,
    }


def billed(t: Totals) -> Tokens:
    return Tokens(input=t.prompt - t.cached, output=t.candidates + t.thoughts, cache_read=t.cached)


def make_agent(
    tmp_path: Path, workspace: Path, gemini: str, server: FakeGemini, *, context: ContextMode
) -> GeminiAgent:
    spec = GeminiAgentSpec(
        name="gm",
        command=gemini,
        model=MODEL,
        env=offline_env(tmp_path / "home", server),
        timeout=150,
        stall=120,
    )
    loop_spec = LoopSpec(name="demo", agent="gm", prompt="p", workspace=workspace, context=context)
    agent = build_agent(spec, loop_spec, AgentContext(state_dir=tmp_path / "state"))
    assert isinstance(agent, GeminiAgent)
    return agent


@pytest.mark.gemini_cli
@pytest.mark.timeout(150)
def test_real_gemini_version(tmp_path: Path, gemini: str) -> None:
    done = subprocess.run(
        [gemini, "--version"],
        env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "0.61.0"


@pytest.mark.gemini_cli
@pytest.mark.timeout(200)
async def test_real_gemini_runs_a_command_and_writes_a_file_and_usage_matches_the_server(
    tmp_path: Path, gemini: str, workspace: Path
) -> None:
    replies = [
        function_call(
            "run_shell_command",
            {"command": "echo hi > hello.txt && cat hello.txt"},
            preface="I'll write it.",
            when=lambda b: function_responses(b) == 0,
        ),
        function_call(
            "write_file",
            {"file_path": str(workspace / "notes.txt"), "content": "some notes\n"},
            when=lambda b: function_responses(b) == 1,
        ),
        text("Done: hello.txt and notes.txt.", cached=50, thoughts=3),
    ]
    with FakeGemini(replies) as server:
        agent = make_agent(tmp_path, workspace, gemini, server, context="fresh")
        budget = make_budget()
        events = await collect(agent, request(workspace, budget, "Create hello.txt"))
        requests = server.model_requests()

    done = events[-1]
    assert isinstance(done, Done), done
    assert done.output == "Done: hello.txt and notes.txt."
    assert done.session_id is not None
    assert agent.session_id == done.session_id
    assert (workspace / "hello.txt").read_text() == "hi\n"
    assert (workspace / "notes.txt").read_text() == "some notes\n"
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [c.name for c in calls] == ["run_shell_command", "write_file"]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [r.tool_id for r in results] == [c.tool_id for c in calls]
    assert results[0].output == "hi"
    said = "".join(e.text for e in events if isinstance(e, TextDelta) and e.stream == "assistant")
    assert "I'll write it." in said
    assert len(requests) == 3
    assert server.pending == 0
    assert requests[0].headers["x-goog-api-key"] == "test-gemini-key"
    assert requests[0].model == MODEL
    # Every token the server billed was charged, no more.
    assert token_sum(events) == billed(server.totals)
    assert budget.ledger.tokens_spent == server.totals.tokens


@pytest.mark.gemini_cli
@pytest.mark.timeout(300)
async def test_real_gemini_resumes_the_session_and_charges_only_the_new_turn(
    tmp_path: Path, gemini: str, workspace: Path
) -> None:
    with FakeGemini([text("First answer."), text("Second answer.")]) as server:
        agent = make_agent(tmp_path, workspace, gemini, server, context="continue")
        budget = make_budget()
        first = await collect(agent, request(workspace, budget, "Say something."))
        before = billed(server.totals)
        session = agent.session_id
        agent.restore(session, None)  # as after a supervisor restart
        second = await collect(agent, request(workspace, budget, "Again.", iteration=2))
        after = billed(server.totals)
        last = server.model_requests()[-1].body

    assert isinstance(first[-1], Done)
    assert isinstance(second[-1], Done)
    assert session is not None
    assert second[-1].session_id == session
    assert second[-1].output == "Second answer."
    history = json.dumps(last["contents"])
    assert "First answer." in history
    assert "Say something." in history
    assert token_sum(first) == before
    assert token_sum(first) + token_sum(second) == after


def gm_table(gemini: str, server: FakeGemini, home: Path, **extra: object) -> str:
    return table(
        "agents.gm",
        kind="gemini",
        command=gemini,
        model=MODEL,
        env=offline_env(home, server),
        timeout="3m",
        **extra,
    )


@pytest.mark.gemini_cli
@pytest.mark.timeout(200)
async def test_real_gemini_crossing_the_budget_is_killed_after_the_response_that_crossed(
    tmp_path: Path, gemini: str
) -> None:
    """The second response of the turn crosses the loop's token limit. The CLI writes its
    tokens to its session file as it lands, while its command (sleep 60) runs, and the
    turn is killed there. The bound asserted is the documented one: the response that
    crossed is the last one answered and charged; a request the CLI may already have
    sent is held by the server unanswered (nothing billed), so the outcome does not
    depend on how fast the kill lands; a turn never killed would hang there until its
    timeout, and the asserts below fail."""
    marker = tmp_path / "slept"
    replies = [
        function_call(
            "run_shell_command",
            {"command": "echo one"},
            when=lambda b: function_responses(b) == 0,
        ),
        function_call(
            "run_shell_command",
            {"command": f"sleep 60 && touch {marker}"},
            when=lambda b: function_responses(b) == 1,
        ),
    ]
    with FakeGemini(replies, default=hang(170)) as server:
        limit = 15_000  # a request is ~12.2k prompt tokens: the second one crosses
        config = load(
            tmp_path,
            supervisor_table(tokens=limit),
            gm_table(gemini, server, tmp_path / "home"),
            loop("hello", "gm", max_iterations=3, done_marker="DONE"),
        )
        rec = await run_recorded(config, timeout=180)
        totals = server.totals
        requests = server.model_requests()

    result = rec.result("hello")
    assert result.state == "exhausted", result.reason
    assert "crossed mid-turn" in result.reason
    assert result.iterations == 1
    assert totals.responses == 2  # the crossing response was the last one answered
    assert [r.reply for r in requests[2:]] in ([], ["hang"])  # at most one cut off
    charged = sum(u.tokens for u in rec.of(ev.UsageCharged, "hello"))
    assert result.tokens == charged == totals.tokens
    crossing = requests[1].usage["totalTokenCount"]
    assert charged - crossing <= limit < charged  # the overshoot: that one response
    # Killed while the crossing response's command ran: it never returned.
    sleeps = {e.tool_id for e in rec.of(ev.ToolCalled, "hello") if "sleep 60" in str(e.input)}
    assert not sleeps & {e.tool_id for e in rec.of(ev.ToolReturned, "hello")}
    assert not marker.exists()  # the command died with the process group


@pytest.mark.gemini_cli
@pytest.mark.timeout(200)
async def test_real_gemini_stalled_turn_is_killed_by_the_watchdog(
    tmp_path: Path, gemini: str
) -> None:
    """The server holds its answer: no output, the stall watchdog kills the group."""
    with FakeGemini([], default=hang(170)) as server:
        config = load(
            tmp_path,
            supervisor_table(),
            gm_table(gemini, server, tmp_path / "home", stall="40s"),
            loop("hello", "gm", max_iterations=1, done_marker="DONE", budget={"retries": 0}),
        )
        rec = await run_recorded(config, timeout=180)
        requests = server.model_requests()

    result = rec.result("hello")
    assert result.state == "failed", result.reason
    assert "stall" in result.reason
    assert [r.reply for r in requests][:1] == ["hang"]
    assert result.tokens == 0  # nothing answered, nothing charged
