"""ClaudeCodeAgent with a fake `claude` executable (tests/claude_support.py): the argv,
cwd and environment it is started with, the prompt on stdin when long, what it
charges, and resuming its session in continue mode.

The fake is a small Python script written to tmp_path that replays recorded stream-json
lines (tests/data/stream_json/) with delays, hangs, exits 1 or starts a grandchild, so
that the agent is exercised against a real process. Failures and kills:
test_claude_code_failures.py; the real CLI: test_claude_code_real_cli.py.
"""

from __future__ import annotations

import os
from pathlib import Path

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
)

from supervisor.agents.base import (
    AgentEvent,
    AgentFailed,
    BudgetExhausted,
    Done,
    SessionStarted,
    ToolCall,
    ToolResult,
    Usage,
)
from supervisor.agents.stream_json_lines import decode
from supervisor.agents.usage import Tokens
from supervisor.budget import Charge

pytestmark = pytest.mark.anyio


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


async def test_a_fork_resumes_the_parents_session_with_fork_session_once(
    tmp_path: Path, fake: FakeClaude, workspace: Path
) -> None:
    """`fork.seed_fork` on a Claude Code loop: its first turn runs `--resume=PARENT
    --fork-session`; once the CLI gave it a session of its own, it resumes that one."""
    fake.script(
        [{"file": recording("success_tool_use.jsonl")}],
        [{"file": recording("resumed_session.jsonl")}],
    )
    agent = make_agent(
        tmp_path, workspace, command=str(fake.path), env=fake.env, context="continue"
    )
    agent.fork_session("parent-session")
    budget = make_budget()
    await collect(agent, request(workspace, budget))
    own = agent.session_id
    assert own is not None
    assert own != "parent-session"
    await collect(agent, request(workspace, budget, iteration=2))
    first, second = (call["argv"] for call in fake.invocations())
    assert "--resume=parent-session" in first
    assert first.index("--fork-session") == first.index("--resume=parent-session") + 1
    assert f"--resume={own}" in second
    assert "--fork-session" not in second


async def test_a_turn_keeps_its_last_assistant_messages_uuid_for_a_fork(
    tmp_path: Path, fake: FakeClaude, workspace: Path
) -> None:
    """The `uuid` of the turn's last `assistant` line (the real CLI's, recorded) is where
    a fork from this iteration cuts the session; a turn without one forgets it."""
    fake.script(
        [{"file": recording("success_tool_use.jsonl")}],
        [{"file": recording("resume_not_found.jsonl")}],
    )
    agent = make_agent(tmp_path, workspace, command=str(fake.path), env=fake.env)
    budget = make_budget()
    await collect(agent, request(workspace, budget))
    assert agent.session_at == "42ba9f4b-2e08-4914-b2e4-b81ba86907bd"
    await collect(agent, request(workspace, budget, iteration=2))
    assert agent.session_at is None
