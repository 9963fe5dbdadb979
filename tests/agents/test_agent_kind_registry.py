"""The agent-kind registry: a kind added from one file (`echo_kind.py`) is read and
checked by config, summarised by `loopvisor check`, built, run, stepped into, and given
its provider's rate limiter, with no other file knowing it; and the turn a kind's
agent runs in books what it sends before its next reservation."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import anyio
import echo_kind
import pytest
from helpers import load, loop, run_recorded, supervisor_table, table, wait_event

from supervisor import events as ev
from supervisor.agents import registry
from supervisor.agents.base import AgentRequest, Done, EventSend, Usage, emit
from supervisor.agents.kind import AgentContext
from supervisor.config.load import ConfigError, summarize_loop
from supervisor.spec import LoopSpec

pytestmark = pytest.mark.anyio


@pytest.fixture
def echo(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one registry line of a real kind, for this test only."""
    monkeypatch.setitem(registry.KINDS, "echo", echo_kind.KIND)


def echo_config(tmp_path: Path, **agent: object) -> str:
    return table("agents.e", kind="echo", suffix="DONE", **agent)


@pytest.mark.usefixtures("echo")
def test_config_reads_checks_and_summarises_the_new_kind(tmp_path: Path) -> None:
    config = load(tmp_path, echo_config(tmp_path), loop("L", "e", done_marker="DONE"))
    spec = config.agents["e"]
    assert spec == echo_kind.EchoAgentSpec(name="e", suffix="DONE")
    assert "agent=e(echo echo-cli)" in summarize_loop(config, config.loop("L"))

    with pytest.raises(ConfigError) as err:
        load(tmp_path, echo_config(tmp_path, sufix="x"), loop("L", "e", done_marker="DONE"))
    [issue] = err.value.issues
    assert issue.line == 4
    assert 'unknown key sufix in agent "e" (kind echo) (did you mean "suffix"?)' in issue.message


def test_without_its_registry_line_the_kind_is_unknown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, echo_config(tmp_path), loop("L", "e", done_marker="DONE"))
    known = ", ".join(f'"{name}"' for name in registry.KINDS)
    assert f'kind: expected one of {known}, got string "echo"' in str(err.value)


@pytest.mark.usefixtures("echo")
async def test_a_loop_of_the_new_kind_runs_steps_in_and_shares_its_limiter(
    tmp_path: Path,
) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        table("supervisor.rate_limits.echo", requests_per_minute=600),
        echo_config(tmp_path),
        loop("L", "e", prompt="say $iteration", done_marker="DONE", max_iterations=3),
    )
    steps = []

    async def during(rec: Any) -> None:
        sup = rec.supervisor
        await wait_event(rec, ev.LoopStateChanged, loop="L", where=lambda e: e.state == "running")
        steps.append(await sup.step_in("L"))
        steps.append(await sup.chat("L", "are you there?"))
        await sup.hand_back("L")

    rec = await run_recorded(config, exit_when_idle=False, during=during)
    step, reply = steps
    assert (step.agent_kind, step.chat) == ("echo", True)
    assert step.resume_argv == ("echo-cli", "--resume", step.session_id)
    assert reply == "are you there? DONE"
    assert rec.result("L").state == "succeeded"
    agent = rec.supervisor.runners["L"].agent
    assert isinstance(agent, echo_kind.EchoAgent)
    assert agent.limiter is not None  # the run made the limiter its provider names
    assert agent.limiter.statistics().requests >= 2  # the chat turn and an iteration
    assert agent.limiter.statistics().requests_per_minute == 600


class ReservesTwice(echo_kind.EchoAgent):
    """Reports usage and asks for a reservation at once, with no await between."""

    grants: ClassVar[list[int]] = []

    async def run(self, request: AgentRequest, send: EventSend) -> None:
        await request.budget.reserve(input_tokens=0, max_output_tokens=100)
        await emit(send, Usage(output_tokens=100))
        second = await request.budget.reserve(input_tokens=0, max_output_tokens=1000)
        self.grants.append(second)
        await emit(send, Done(output="DONE"))


async def test_reserve_waits_until_the_turn_has_booked_what_the_agent_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the wait the first reservation would be released before its usage is
    booked, and the second would be granted the whole budget (1000, not 900)."""

    def build(spec: Any, loop: LoopSpec, ctx: AgentContext) -> ReservesTwice:
        return ReservesTwice(spec, loop, ctx)

    monkeypatch.setitem(registry.KINDS, "echo", dataclasses.replace(echo_kind.KIND, build=build))
    monkeypatch.setattr(ReservesTwice, "grants", [])
    config = load(
        tmp_path,
        supervisor_table(),
        echo_config(tmp_path),
        loop("L", "e", done_marker="DONE", max_iterations=1, budget={"tokens": 1000}),
    )
    with anyio.fail_after(20):
        rec = await run_recorded(config)
    assert ReservesTwice.grants == [900]
    assert rec.result("L").state == "succeeded"
    assert rec.supervisor.runners["L"].ledger.statistics().tokens_spent == 100
