"""ClaudeCodeAgent with a fake `claude` executable, and with the real CLI when installed.

The fake is a small Python script written to tmp_path that replays recorded stream-json
lines (tests/data/stream_json/) with delays, hangs, exits 1 or starts a grandchild, so
that process-group kills, stall, timeout, budget-crossing kills, argv, cwd and env are
exercised for real. The `claude_cli` tests run the real CLI (LOOPVISOR_CLAUDE_BIN, else
.ci/node from scripts/install-claude-code.sh, else `claude` on PATH) against the fake
Messages API in tests/fake_anthropic.py, offline.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from claude_support import (
    FakeClaude,
    collect,
    lines_of,
    make_agent,
    make_budget,
    recording,
    request,
    token_sum,
    usd_sum,
    wait_for_file,
    wait_gone,
)
from fake_anthropic import FakeAnthropic, text, tool_use
from helpers import REPO, agent_events, load, loop, run_recorded, supervisor_table, table

from supervisor import events as ev
from supervisor.agents import claude_code as claude_code_module
from supervisor.agents.base import (
    AgentEvent,
    AgentFailed,
    BudgetExhausted,
    Done,
    SessionStarted,
    TextDelta,
    ToolCall,
    ToolResult,
    Usage,
    Waiting,
)
from supervisor.agents.stream_json import Tokens, decode
from supervisor.budget import Charge

pytestmark = pytest.mark.anyio


@pytest.fixture
def fake(tmp_path: Path) -> FakeClaude:
    return FakeClaude(tmp_path)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


# -- argv, cwd, env, resume ------------------------------------------------------------------


async def test_success_turn_argv_cwd_env(tmp_path: Path, fake: FakeClaude, workspace: Path) -> None:
    fake.script([{"file": recording("success_tool_use.jsonl"), "delay": 0.01}])
    agent = make_agent(
        tmp_path,
        workspace,
        command=str(fake.path),
        env={**fake.env, "SPEC_ONLY": "1", "SHARED": "spec"},
        model="claude-sonnet-4-5",
        args=("--permission-mode", "acceptEdits", "--allowedTools", "Write", "Bash"),
    )
    budget = make_budget()
    events = await collect(
        agent,
        request(workspace, budget, "-starts with a dash", {"REQ_ONLY": "2", "SHARED": "req"}),
    )

    [inv] = fake.invocations()
    assert inv["argv"] == [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--include-partial-messages",
        "--model",
        "claude-sonnet-4-5",
        "--permission-mode",
        "acceptEdits",
        "--allowedTools",
        "Write",
        "Bash",
        "--",
        "-starts with a dash",
    ]
    assert Path(inv["cwd"]) == workspace
    inherited = {k for k in os.environ if k.startswith("LOOPVISOR_")}  # e.g. CI's CLAUDE_BIN
    env = {k: v for k, v in inv["env"].items() if k not in inherited}
    assert env.pop("LOOPVISOR_PROC").partition("#")[2].isdigit()  # its group's reaper tag
    assert env == {"SPEC_ONLY": "1", "REQ_ONLY": "2", "SHARED": "req"}
    assert inv["has_path"]  # the allow-listed environment is inherited
    assert inv["pgid"] == inv["pid"]  # its own process group

    res = decode(lines_of("success_tool_use.jsonl")[-1])
    assert res is not None
    sid = res["session_id"]
    assert SessionStarted(sid) in events
    assert [e.name for e in events if isinstance(e, ToolCall)] == ["Write"]
    assert [e.tool_id for e in events if isinstance(e, ToolResult)] == ["toolu_1"]
    assert events[-1] == Done("Done: hello.txt written. ", session_id=sid, stop_reason="success")
    assert agent.session_id == sid
    assert agent.conversation() is None

    assert token_sum(events) == Tokens.from_api(res["usage"])
    assert usd_sum(events) == pytest.approx(res["total_cost_usd"], rel=1e-12)
    stats = budget.ledger.statistics()
    assert stats.tokens_spent == Tokens.from_api(res["usage"]).total
    assert stats.usd_spent == pytest.approx(res["total_cost_usd"], rel=1e-9)
    assert sum(e.cpu_s for e in events if isinstance(e, Usage)) > 0


async def test_resume_only_in_continue_mode(
    tmp_path: Path, fake: FakeClaude, workspace: Path
) -> None:
    success = [{"file": recording("success_tool_use.jsonl")}]
    fake.script(success)
    sid = "ea86c911-d944-4bdb-afc2-00b059360253"
    agent = make_agent(
        tmp_path,
        workspace,
        command=str(fake.path),
        env=fake.env,
        context="continue",
        partial_messages=False,
    )
    budget = make_budget()
    await collect(agent, request(workspace, budget))
    await collect(agent, request(workspace, budget, iteration=2))
    agent.reset()
    assert agent.session_id is None
    await collect(agent, request(workspace, budget, iteration=3))
    agent.restore("restored-session", None)
    await collect(agent, request(workspace, budget, iteration=4))

    argvs = [inv["argv"] for inv in fake.invocations()]
    assert argvs[0] == [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--",
        "write hello.txt",
    ]
    assert f"--resume={sid}" in argvs[1]
    assert not any(a.startswith("--resume") for a in argvs[2])
    assert "--resume=restored-session" in argvs[3]

    fresh = make_agent(tmp_path, workspace, command=str(fake.path), env=fake.env)
    await collect(fresh, request(workspace, budget))
    await collect(fresh, request(workspace, budget, iteration=2))
    assert fresh.session_id == sid  # kept for step-in even when not resumed
    assert not any(a.startswith("--resume") for a in fake.invocations()[-1]["argv"])


async def test_resumed_turn_charges_this_invocation_only(
    tmp_path: Path, fake: FakeClaude, workspace: Path
) -> None:
    fake.script(
        [{"file": recording("success_tool_use.jsonl")}],
        [{"file": recording("resumed_session.jsonl")}],
    )
    agent = make_agent(
        tmp_path, workspace, command=str(fake.path), env=fake.env, context="continue"
    )
    budget = make_budget()
    first = await collect(agent, request(workspace, budget))
    second = await collect(agent, request(workspace, budget, iteration=2))
    res = decode(lines_of("resumed_session.jsonl")[-1])
    assert res is not None
    this_call = res["model_usage_since_last_result"]["claude-opus-5-5"]["costUSD"]
    assert usd_sum(second) == pytest.approx(this_call, rel=1e-12)
    total = usd_sum(first) + usd_sum(second)
    assert total == pytest.approx(res["total_cost_usd"], rel=1e-9)  # cumulative session cost
    assert budget.ledger.usd_spent == pytest.approx(res["total_cost_usd"], rel=1e-9)


async def test_a_session_that_cannot_be_resumed_is_dropped(
    tmp_path: Path, fake: FakeClaude, workspace: Path
) -> None:
    success = [{"file": recording("success_tool_use.jsonl")}]
    fake.script(success, [{"file": recording("resume_not_found.jsonl")}, {"exit": 1}], success)
    agent = make_agent(
        tmp_path, workspace, command=str(fake.path), env=fake.env, context="continue"
    )
    budget = make_budget()
    await collect(agent, request(workspace, budget))
    failed = (await collect(agent, request(workspace, budget, iteration=2)))[-1]
    assert isinstance(failed, AgentFailed)
    assert failed.retryable
    assert "No conversation found" in failed.message
    assert agent.session_id is None
    await collect(agent, request(workspace, budget, iteration=3))
    argvs = [inv["argv"] for inv in fake.invocations()]
    assert any(a.startswith("--resume=") for a in argvs[1])
    assert not any(a.startswith("--resume") for a in argvs[2])


async def test_long_prompt_goes_on_stdin(tmp_path: Path, fake: FakeClaude, workspace: Path) -> None:
    fake.script([{"file": recording("success_tool_use.jsonl")}])
    agent = make_agent(tmp_path, workspace, command=str(fake.path), env=fake.env)
    prompt = "x" * 200_000
    events = await collect(agent, request(workspace, make_budget(), prompt))
    [inv] = fake.invocations()
    assert inv["stdin"] == len(prompt)
    assert prompt not in inv["argv"]
    assert "--" not in inv["argv"]
    assert isinstance(events[-1], Done)


async def test_missing_executable_fails_without_retry(tmp_path: Path, workspace: Path) -> None:
    agent = make_agent(tmp_path, workspace, command=str(tmp_path / "no-such-claude"))
    events = await collect(agent, request(workspace, make_budget()))
    assert len(events) == 1
    assert isinstance(events[0], AgentFailed)
    assert not events[0].retryable
    assert "no-such-claude" in events[0].message


async def test_spent_ledger_refuses_before_starting(
    tmp_path: Path, fake: FakeClaude, workspace: Path
) -> None:
    fake.script([{"file": recording("success_tool_use.jsonl")}])
    agent = make_agent(tmp_path, workspace, command=str(fake.path), env=fake.env)
    budget = make_budget(tokens=100)
    budget.ledger.charge(Charge(tokens=100))
    with pytest.raises(BudgetExhausted):
        await collect(agent, request(workspace, budget))
    assert fake.invocations() == []


async def test_reserve_tokens_are_held_during_the_turn(
    tmp_path: Path, fake: FakeClaude, workspace: Path
) -> None:
    fake.script([{"file": recording("success_tool_use.jsonl"), "delay": 0.05}])
    agent = make_agent(
        tmp_path, workspace, command=str(fake.path), env=fake.env, reserve_tokens=1000
    )
    budget = make_budget(tokens=10_000)
    reserved: list[int] = []

    def look(event: AgentEvent) -> None:
        reserved.append(budget.ledger.tokens_reserved)

    await collect(agent, request(workspace, budget), look)
    assert reserved[0] == 1000  # before any usage arrived
    assert min(reserved) < 1000  # usage drew on the reservation


# -- failures ---------------------------------------------------------------------------


async def test_exit_1_without_result_reports_stderr_tail(
    tmp_path: Path, fake: FakeClaude, workspace: Path
) -> None:
    init = lines_of("success_tool_use.jsonl")[0]
    fake.script([{"out": init}, {"err": "Error: something broke"}, {"exit": 1}])
    agent = make_agent(tmp_path, workspace, command=str(fake.path), env=fake.env)
    events = await collect(agent, request(workspace, make_budget()))
    assert TextDelta("Error: something broke\n", stream="stderr") in events
    failed = events[-1]
    assert isinstance(failed, AgentFailed)
    assert failed.retryable
    assert "exited 1" in failed.message
    assert "something broke" in failed.message


async def test_error_result_with_exit_1_uses_the_result(
    tmp_path: Path, fake: FakeClaude, workspace: Path
) -> None:
    fake.script([{"file": recording("api_error_401.jsonl")}, {"exit": 1}])
    agent = make_agent(tmp_path, workspace, command=str(fake.path), env=fake.env)
    events = await collect(agent, request(workspace, make_budget()))
    assert any(isinstance(e, Waiting) for e in events)
    failed = events[-1]
    assert isinstance(failed, AgentFailed)
    assert not failed.retryable
    assert "Invalid API key" in failed.message


async def test_stall_kills_the_process_group(
    tmp_path: Path, fake: FakeClaude, workspace: Path
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    init = lines_of("success_tool_use.jsonl")[0]
    fake.script([{"out": init}, {"grandchild": str(pidfile)}, {"hang": True}])
    agent = make_agent(
        tmp_path, workspace, command=str(fake.path), env=fake.env, stall=0.5, timeout=None
    )
    started = time.monotonic()
    events = await collect(agent, request(workspace, make_budget()))
    assert time.monotonic() - started < 10
    failed = events[-1]
    assert isinstance(failed, AgentFailed)
    assert failed.retryable
    assert "no output from claude" in failed.message
    grandchild = int(pidfile.read_text())
    [inv] = fake.invocations()
    assert await wait_gone(inv["pid"], grandchild) == []


async def test_total_timeout_kills_a_chatty_cli(
    tmp_path: Path, fake: FakeClaude, workspace: Path
) -> None:
    fake.script([{"tick": 0.05}])
    agent = make_agent(
        tmp_path, workspace, command=str(fake.path), env=fake.env, stall=0.5, timeout=1.0
    )
    started = time.monotonic()
    events = await collect(agent, request(workspace, make_budget()))
    assert 1.0 <= time.monotonic() - started < 8
    failed = events[-1]
    assert isinstance(failed, AgentFailed)
    assert failed.message == "claude timed out after 1s"
    assert failed.retryable
    assert sum(isinstance(e, TextDelta) and e.stream == "raw" for e in events) > 5
    assert await wait_gone(fake.invocations()[0]["pid"]) == []


async def test_a_term_ignoring_cli_is_killed_after_the_grace(
    tmp_path: Path, fake: FakeClaude, workspace: Path
) -> None:
    fake.script([{"ignore_term": True}, {"out": "starting"}, {"hang": True}])
    agent = make_agent(
        tmp_path, workspace, command=str(fake.path), env=fake.env, stall=0.3, timeout=None
    )
    events = await collect(agent, request(workspace, make_budget()))
    assert isinstance(events[-1], AgentFailed)
    assert await wait_gone(fake.invocations()[0]["pid"]) == []


async def test_api_retry_delay_is_not_a_stall(
    tmp_path: Path, fake: FakeClaude, workspace: Path
) -> None:
    lines = lines_of("api_retry_then_success.jsonl")
    retry_at = next(i for i, line in enumerate(lines) if '"api_retry"' in line)
    retry = json.loads(lines[retry_at])
    retry["retry_delay_ms"] = 1500
    fake.script(
        [
            *({"out": line} for line in lines[:retry_at]),
            {"out": json.dumps(retry)},
            {"sleep": 1.2},
            *({"out": line} for line in lines[retry_at + 1 :]),
        ]
    )
    agent = make_agent(tmp_path, workspace, command=str(fake.path), env=fake.env, stall=0.6)
    events = await collect(agent, request(workspace, make_budget()))
    assert any(isinstance(e, Waiting) and e.seconds == 1.5 for e in events)
    assert isinstance(events[-1], Done)


async def test_cli_lingering_after_its_result_is_killed_but_done(
    tmp_path: Path, fake: FakeClaude, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(claude_code_module, "RESULT_GRACE_S", 0.3)
    fake.script([{"file": recording("success_tool_use.jsonl")}, {"hang": True}])
    agent = make_agent(tmp_path, workspace, command=str(fake.path), env=fake.env, stall=None)
    events = await collect(agent, request(workspace, make_budget()))
    assert isinstance(events[-1], Done)
    assert await wait_gone(fake.invocations()[0]["pid"]) == []


# -- cancellation: the loop kills a turn that crosses its budget ----------------------------


def crossing_script(fake: FakeClaude, pidfile: Path) -> None:
    """Two messages of usage (the second crosses a 300-token budget), then a hang."""
    lines = lines_of("success_tool_use.jsonl")
    msg2 = json.loads(lines[4])
    msg2["message"]["usage"]["input_tokens"] = 250
    fake.script(
        [
            {"out": lines[0]},
            {"grandchild": str(pidfile)},
            {"out": lines[1]},  # msg_1: 101 + 1 + 7 + 3 = 112 tokens
            {"sleep": 0.2},
            {"out": json.dumps(msg2)},  # msg_2: 250 + 1 + 7 + 3 = 261 tokens: crosses 300
            {"hang": True},
        ]
    )


async def test_budget_crossing_cancels_the_turn_and_kills_the_group(
    tmp_path: Path, fake: FakeClaude, workspace: Path
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    crossing_script(fake, pidfile)
    agent = make_agent(tmp_path, workspace, command=str(fake.path), env=fake.env, stall=None)
    budget = make_budget(tokens=300)
    seen: list[AgentEvent] = []
    started = time.monotonic()
    # What AgentTurn._consume does: charge, and on crossing cancel the scope and leave.
    with anyio.CancelScope() as scope:
        async with agent_events(agent, request(workspace, budget)) as stream:
            async for event in stream:
                seen.append(event)
                if isinstance(event, Usage):
                    budget.charge(event)
                    if budget.ledger.crossed() is not None:
                        scope.cancel()
                        break
    assert time.monotonic() - started < 10
    assert not any(isinstance(e, Done | AgentFailed) for e in seen)
    stats = budget.ledger.statistics()
    assert stats.tokens_spent == 112 + 261
    assert 0 < stats.overshoot_tokens <= 261  # bounded by one message
    grandchild = int(pidfile.read_text())
    [inv] = fake.invocations()
    assert await wait_gone(inv["pid"], grandchild) == []
    assert agent.session_id is not None  # still known for step-in


async def test_cancelling_the_consumer_mid_read_kills_the_group(
    tmp_path: Path, fake: FakeClaude, workspace: Path
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    init = lines_of("success_tool_use.jsonl")[0]
    fake.script([{"out": init}, {"grandchild": str(pidfile)}, {"hang": True}])
    agent = make_agent(tmp_path, workspace, command=str(fake.path), env=fake.env, stall=None)
    seen: list[AgentEvent] = []
    with anyio.move_on_after(1.0) as scope:
        # The cancellation arrives while the consumer waits for a line.
        async with agent_events(agent, request(workspace, make_budget())) as stream:
            async for event in stream:
                seen.append(event)
    assert scope.cancelled_caught
    assert any(isinstance(e, SessionStarted) for e in seen)
    grandchild = int(await wait_for_file(pidfile))
    assert await wait_gone(fake.invocations()[0]["pid"], grandchild) == []


async def test_aclose_kills_a_running_turn(
    tmp_path: Path, fake: FakeClaude, workspace: Path
) -> None:
    init = lines_of("success_tool_use.jsonl")[0]
    fake.script([{"out": init}, {"hang": True}])
    agent = make_agent(tmp_path, workspace, command=str(fake.path), env=fake.env, stall=None)
    events: list[AgentEvent] = []
    started = anyio.Event()

    async def consume() -> None:
        async with agent_events(agent, request(workspace, make_budget())) as stream:
            async for event in stream:
                events.append(event)
                started.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await started.wait()
        await agent.aclose()
    failed = events[-1]
    assert isinstance(failed, AgentFailed)
    assert "killed" in failed.message
    assert await wait_gone(fake.invocations()[0]["pid"]) == []


# -- the real CLI ------------------------------------------------------------------------------


def claude_bin() -> tuple[str | None, str]:
    """The CLI to run, or None and why not."""
    configured = os.environ.get("LOOPVISOR_CLAUDE_BIN")
    if configured:
        if Path(configured).exists():
            return configured, ""
        return None, f"LOOPVISOR_CLAUDE_BIN={configured} does not exist"
    local = REPO / ".ci" / "node" / "node_modules" / ".bin" / "claude"
    if local.exists():
        return str(local), ""
    found = shutil.which("claude")
    if found:
        return found, ""
    return None, (
        "Claude Code CLI not installed: run scripts/install-claude-code.sh "
        "(or set LOOPVISOR_CLAUDE_BIN / put `claude` on PATH)"
    )


@pytest.fixture
def claude() -> str:
    """The real CLI; skipped when absent, failed when LOOPVISOR_REQUIRE_CLAUDE_CLI=1 (CI)."""
    path, why = claude_bin()
    if path is None:
        if os.environ.get("LOOPVISOR_REQUIRE_CLAUDE_CLI") == "1":
            pytest.fail(f"LOOPVISOR_REQUIRE_CLAUDE_CLI=1 but {why}")
        pytest.skip(why)
    return path


def offline_env(server: FakeAnthropic, home: Path) -> dict[str, str]:
    home.mkdir(exist_ok=True)
    return {
        "ANTHROPIC_BASE_URL": server.base_url,
        "ANTHROPIC_API_KEY": "sk-ant-dummy",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "HOME": str(home),
    }


def main_turn(body: Mapping[str, Any]) -> bool:
    """A request of the agent loop (it offers the Write tool), not a side call."""
    return any(t.get("name") == "Write" for t in body.get("tools", []))


def after_tool_result(body: Mapping[str, Any]) -> bool:
    content = body["messages"][-1].get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def server_tokens(server: FakeAnthropic) -> Tokens:
    t = server.totals
    return Tokens(
        t.input_tokens, t.output_tokens, t.cache_creation_input_tokens, t.cache_read_input_tokens
    )


@pytest.mark.claude_cli
async def test_real_cli_writes_a_file_and_usage_matches_the_server(
    tmp_path: Path, claude: str, workspace: Path
) -> None:
    target = workspace / "hello.txt"
    replies = [
        tool_use(
            "Write",
            {"file_path": str(target), "content": "hello from the fake model\n"},
            preface="I'll create the file.",
            when=lambda b: main_turn(b) and not after_tool_result(b),
        ),
        text("Created hello.txt.", when=lambda b: main_turn(b) and after_tool_result(b)),
    ]
    with FakeAnthropic(replies) as server:
        agent = make_agent(
            tmp_path,
            workspace,
            command=claude,
            env=offline_env(server, tmp_path / "home"),
            args=("--permission-mode", "acceptEdits"),
            model="claude-sonnet-4-5",
            timeout=120,
            stall=60,
        )
        budget = make_budget()
        events = await collect(agent, request(workspace, budget, "Create hello.txt"))

    done = events[-1]
    assert isinstance(done, Done), events[-1]
    assert done.stop_reason == "success"
    assert done.output.strip() == "Created hello.txt."
    assert target.read_text() == "hello from the fake model\n"
    [call] = [e for e in events if isinstance(e, ToolCall)]
    assert call.name == "Write"
    assert call.input["file_path"] == str(target)
    [result] = [e for e in events if isinstance(e, ToolResult)]
    assert result.tool_id == call.tool_id
    assert not result.is_error
    assert "I'll create the file." in "".join(
        e.text for e in events if isinstance(e, TextDelta) and e.stream == "assistant"
    )
    assert server.pending == 0

    # Every token the server billed was charged, no more: the CLI's own result totals
    # (model_usage_since_last_result) cover side calls too, and equal the server's log.
    assert server.totals.messages == len(server.message_requests())
    assert token_sum(events) == server_tokens(server)
    assert budget.ledger.tokens_spent == server.totals.tokens
    # USD: priced from our table while running, settled to the CLI's own figure.
    assert agent.session_id == done.session_id
    cost = agent.session_cost_usd  # the result's total_cost_usd (a fresh session)
    assert cost is not None
    assert cost > 0
    assert usd_sum(events) == pytest.approx(cost, rel=1e-9)
    assert budget.ledger.usd_spent == pytest.approx(cost, rel=1e-9)


@pytest.mark.claude_cli
async def test_real_cli_resumes_the_session_in_continue_mode(
    tmp_path: Path, claude: str, workspace: Path
) -> None:
    with FakeAnthropic([text("First answer."), text("Second answer.")]) as server:
        agent = make_agent(
            tmp_path,
            workspace,
            command=claude,
            env=offline_env(server, tmp_path / "home"),
            context="continue",
            timeout=120,
            stall=60,
        )
        budget = make_budget()
        first = await collect(agent, request(workspace, budget, "Say something."))
        before = server_tokens(server)
        sid = agent.session_id
        second = await collect(agent, request(workspace, budget, "Again.", iteration=2))
        after = server_tokens(server)
        requests = server.message_requests()

    assert isinstance(first[-1], Done)
    assert isinstance(second[-1], Done)
    assert sid is not None
    assert second[-1].session_id == sid  # the same session, continued
    assert second[-1].output.strip() == "Second answer."
    # The second request carried the first exchange.
    history = json.dumps(requests[-1].body["messages"])
    assert "First answer." in history
    assert "Say something." in history
    # Each turn charged exactly what the server billed during it (not the session total).
    assert token_sum(first) == before
    assert token_sum(first) + token_sum(second) == after
    assert budget.ledger.tokens_spent == after.total


# -- the real CLI under a real loop ----------------------------------------------------------


def cc_agent_table(claude: str, server: FakeAnthropic, home: Path) -> str:
    return table(
        "agents.cc",
        kind="claude-code",
        command=claude,
        model="claude-sonnet-4-5",
        args=["--permission-mode", "acceptEdits"],
        env=offline_env(server, home),
        timeout="2m",
        stall="1m",
    )


HELLO_CHECK = {"name": "hello", "run": "cat hello.txt", "pattern": "^Hello, world$"}


@pytest.mark.claude_cli
async def test_real_cli_loop_converges_when_its_write_makes_the_check_pass(
    tmp_path: Path,
    claude: str,
) -> None:
    target = tmp_path / "hello.txt"
    replies = [
        # Iteration 1: the model only talks; the check fails.
        text("I will get to it.", when=main_turn),
        # Iteration 2: it writes the file the check wants.
        tool_use(
            "Write",
            {"file_path": str(target), "content": "Hello, world\n"},
            when=lambda b: main_turn(b) and not after_tool_result(b),
        ),
        text("Wrote hello.txt.", when=lambda b: main_turn(b) and after_tool_result(b)),
    ]
    with FakeAnthropic(replies) as server:
        config = load(
            tmp_path,
            supervisor_table(tokens=500_000),
            cc_agent_table(claude, server, tmp_path / "home"),
            loop("hello", "cc", checks=[HELLO_CHECK], max_iterations=4),
        )
        rec = await run_recorded(config, timeout=180)
        billed = server.totals.tokens
        requests = len(server.message_requests())

    result = rec.result("hello")
    assert (result.state, result.iterations) == ("succeeded", 2), result.reason
    assert target.read_text() == "Hello, world\n"
    assert [c.passed for c in rec.of(ev.CheckFinished, "hello")] == [False, True]
    assert [t.name for t in rec.of(ev.ToolCalled, "hello")] == ["Write"]
    assert requests == 3
    # The ledger holds exactly what the server billed.
    assert result.tokens == billed
    assert sum(u.tokens for u in rec.of(ev.UsageCharged, "hello")) == billed


@pytest.mark.claude_cli
async def test_real_cli_crossing_the_global_budget_is_killed_mid_turn(
    tmp_path: Path,
    claude: str,
) -> None:
    target = tmp_path / "hello.txt"
    replies = [
        tool_use(
            "Write",
            {"file_path": str(target), "content": "Hello, world\n"},
            when=lambda b: main_turn(b) and not after_tool_result(b),
        ),
        text("Wrote hello.txt.", when=lambda b: main_turn(b) and after_tool_result(b)),
    ]
    with FakeAnthropic(replies) as server:
        # Claude Code sends ~22k input tokens a request: the first fits, the second crosses.
        limit = 30_000
        config = load(
            tmp_path,
            supervisor_table(tokens=limit),
            cc_agent_table(claude, server, tmp_path / "home"),
            loop("hello", "cc", checks=[HELLO_CHECK], max_iterations=4),
        )
        rec = await run_recorded(config, timeout=180)
        billed = server.totals.tokens
        requests = server.message_requests()

    result = rec.result("hello")
    assert result.state == "exhausted", result.reason
    assert "crossed mid-turn" in result.reason
    assert result.iterations == 1
    assert len(requests) == 2  # the turn died during its second request
    charged = sum(u.tokens for u in rec.of(ev.UsageCharged, "hello"))
    assert result.tokens == charged
    assert limit < charged <= billed  # crossed, and never more than the server billed
    one_message = max(u.tokens for u in rec.of(ev.UsageCharged, "hello"))
    assert charged - limit <= one_message  # the overshoot is bounded by one message
    assert not rec.of(ev.CheckFinished, "hello")  # killed: no checks ran
