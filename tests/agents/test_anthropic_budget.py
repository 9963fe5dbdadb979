"""AnthropicAgent and the budget: API loops sharing one global token budget never exceed
it and spend exactly the fake server's bill, turn by turn and under the real
supervisor (a loop that converges with write_file and a check, five loops exhausting
the budget together).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from anthropic_support import KEY, anthropic_agent_table, drive, make_agent
from fake_anthropic import FakeAnthropic, cut, error, input_tokens_for, text, tool_use
from helpers import REPO, load, loop, run_recorded, supervisor_table, table

from supervisor import events as ev
from supervisor.agents.anthropic import AnthropicAgent
from supervisor.agents.base import BudgetExhausted, Done
from supervisor.budget import Ledger
from supervisor.config.load import load_config
from supervisor.spec import Limits

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("api_key")]


# -- the shared global budget ---------------------------------------------------------------


async def run_until_exhausted(
    agents: list[AnthropicAgent], workspace: Path, global_ledger: Ledger
) -> list[int]:
    turns = [0] * len(agents)
    limit = global_ledger.limits.tokens
    assert limit is not None

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
            assert global_ledger.tokens_spent <= limit

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
