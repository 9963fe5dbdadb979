"""ClaudeCodeAgent with the fake `claude` executable when things go wrong: a CLI that
exits 1, stalls, talks past its timeout, ignores SIGTERM, lingers after its result, or
crosses its budget mid-turn; every time its whole process group is killed (a
grandchild included) and the turn says why.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

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
    wait_for_file,
    wait_gone,
)
from helpers import agent_events

from supervisor.agents import claude_code as claude_code_module
from supervisor.agents.base import (
    AgentEvent,
    AgentFailed,
    Done,
    SessionStarted,
    TextDelta,
    Usage,
    Waiting,
)

pytestmark = pytest.mark.anyio


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
    # The stall clock starts at spawn: 0.3 s killed the fake before it had even
    # recorded its pid on a loaded 2-core machine; 2 s still ends the test quickly.
    agent = make_agent(
        tmp_path, workspace, command=str(fake.path), env=fake.env, stall=2.0, timeout=None
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
