"""The built-in sim agent, driven turn by turn against real ledgers and a real workspace."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import agent_events, load, loop, run_recorded, sim_agent, supervisor_table

from supervisor import events as ev
from supervisor.agents.base import (
    AgentEvent,
    AgentFailed,
    AgentRequest,
    Done,
    TextDelta,
    Usage,
    estimate_tokens,
)
from supervisor.agents.kinds.sim import SimAgentSpec, SimBehavior
from supervisor.agents.sim import SimAgent
from supervisor.budget import Ledger
from supervisor.spec import Limits, LoopSpec
from supervisor.turn_budget import LedgerTurnBudget

pytestmark = pytest.mark.anyio


def make(
    tmp_path: Path,
    *,
    seed: int = 7,
    behavior: SimBehavior = "converge",
    loop_name: str = "L",
    **fields: Any,
) -> SimAgent:
    fields.setdefault("rate", 0)
    fields.setdefault("reply_tokens", 30)
    spec = SimAgentSpec(name="sim", seed=seed, behavior=behavior, **fields)
    return SimAgent(spec, LoopSpec(name=loop_name, agent="sim", prompt="p", workspace=tmp_path))


async def turn(
    agent: SimAgent,
    n: int,
    tmp_path: Path,
    *,
    ledger: Ledger | None = None,
    prompt: str = "Fix the bug, please.",
) -> list[AgentEvent]:
    """One turn, with every Usage charged to the ledger the way the loop does it."""
    ledger = ledger or Ledger("L", Limits(), parent=Ledger("global", Limits()))
    budget = LedgerTurnBudget(ledger)
    request = AgentRequest(
        loop=agent.loop.name, iteration=n, prompt=prompt, workspace=tmp_path, budget=budget
    )
    events: list[AgentEvent] = []
    async with agent_events(agent, request) as stream:
        async for event in stream:
            if isinstance(event, Usage):
                budget.charge(event)
            events.append(event)
    budget.release()
    return events


def text_of(events: list[AgentEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def last(events: list[AgentEvent]) -> AgentEvent:
    return events[-1]


async def test_same_seed_gives_the_same_text(tmp_path: Path) -> None:
    a = text_of(await turn(make(tmp_path, seed=11), 1, tmp_path))
    b = text_of(await turn(make(tmp_path, seed=11), 1, tmp_path))
    c = text_of(await turn(make(tmp_path, seed=12), 1, tmp_path))
    assert a == b
    assert a != c
    assert len(a.split()) == 30


async def test_output_of_done_is_the_streamed_text(tmp_path: Path) -> None:
    events = await turn(make(tmp_path), 1, tmp_path)
    done = last(events)
    assert isinstance(done, Done)
    assert done.output == text_of(events)
    assert done.stop_reason == "end_turn"
    assert sum(isinstance(e, TextDelta) for e in events) == 30


async def test_streams_at_its_rate(tmp_path: Path) -> None:
    agent = make(tmp_path, rate=250, reply_tokens=50)
    started = time.monotonic()
    stamps: list[float] = []
    request = AgentRequest(
        loop="L",
        iteration=1,
        prompt="go",
        workspace=tmp_path,
        budget=LedgerTurnBudget(Ledger("L", Limits())),
    )
    async with agent_events(agent, request) as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                stamps.append(time.monotonic() - started)
    assert len(stamps) == 50
    # 50 tokens at 250/s is 0.2 s; tokens arrive spread out, not in one burst.
    assert 0.18 <= stamps[-1] < 1.5
    assert stamps[24] < stamps[-1] - 0.05


async def test_tokens_due_while_the_loop_was_busy_come_in_one_burst(tmp_path: Path) -> None:
    """A supervisor too busy to wake the sim on time (1,000 loops) gets the tokens that
    fell due meanwhile together, as a model's stream leaves them in a slow reader's
    socket: not one sleep, wake-up and output event per token (issue 12: that made the
    sim path ~2x dearer). Counted, not timed: how many tokens the turn finds buffered
    at once after the event loop was held up for 0.1 s (20 tokens at 200/s)."""
    agent = make(tmp_path, rate=200, reply_tokens=60)
    request = AgentRequest(
        loop="L",
        iteration=1,
        prompt="go",
        workspace=tmp_path,
        budget=LedgerTurnBudget(Ledger("L", Limits())),
    )
    send, receive = anyio.create_memory_object_stream[AgentEvent](64)
    bursts: list[int] = []

    async def produce() -> None:
        with send:
            await agent.run(request, send)

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        async with receive:
            while True:
                event = await receive.receive()
                if not bursts:
                    time.sleep(0.1)  # noqa: ASYNC251 (the event loop held up, as by 1,000 loops)
                burst = 1
                while not isinstance(event, Done):
                    try:
                        event = receive.receive_nowait()
                    except anyio.WouldBlock:
                        break
                    burst += isinstance(event, TextDelta)
                bursts.append(burst)
                if isinstance(event, Done):
                    break
    assert max(bursts) >= 10
    assert sum(bursts) >= 60  # every token came, none twice


async def test_usage_sums_to_input_plus_output(tmp_path: Path) -> None:
    top = Ledger("global", Limits())
    ledger = Ledger("L", Limits(), parent=top)
    agent = make(tmp_path, reply_tokens=45)
    prompt = "Make the failing tests pass. " * 10
    events = await turn(agent, 1, tmp_path, ledger=ledger, prompt=prompt)
    usages = [e for e in events if isinstance(e, Usage)]
    assert usages[0].input_tokens == estimate_tokens(prompt)
    assert sum(u.input_tokens for u in usages) == estimate_tokens(prompt)
    assert sum(u.output_tokens for u in usages) == 45
    assert len(usages) > 2  # reported while streaming, not only at the end
    total = sum(u.tokens for u in usages)
    assert total == estimate_tokens(prompt) + 45
    assert ledger.tokens_spent == top.tokens_spent == total
    assert sum(u.usd or 0.0 for u in usages) == pytest.approx(total * 3.0 / 1_000_000)
    assert ledger.tokens_reserved == 0


async def test_explicit_input_tokens_are_charged(tmp_path: Path) -> None:
    events = await turn(make(tmp_path, input_tokens=500), 1, tmp_path)
    assert sum(e.input_tokens for e in events if isinstance(e, Usage)) == 500


async def test_output_is_clamped_to_the_budget_grant(tmp_path: Path) -> None:
    top = Ledger("global", Limits(tokens=10_000))
    ledger = Ledger("L", Limits(tokens=100 + 12), parent=top)
    agent = make(tmp_path, input_tokens=100, reply_tokens=40)
    events = await turn(agent, 1, tmp_path, ledger=ledger)
    done = last(events)
    assert isinstance(done, Done)
    assert done.stop_reason == "max_tokens"
    assert sum(isinstance(e, TextDelta) for e in events) == 12
    assert sum(e.output_tokens for e in events if isinstance(e, Usage)) == 12
    assert ledger.tokens_spent == 112
    assert ledger.overshoot_tokens == 0


async def test_converge_writes_final_files_from_iteration_n(tmp_path: Path) -> None:
    agent = make(
        tmp_path,
        converge_after=3,
        draft_files={"pkg/answer.txt": "draft\n"},
        files={"pkg/answer.txt": "final\n"},
        done_text="ALL DONE",
    )
    answer = tmp_path / "pkg" / "answer.txt"
    outputs = []
    for n in (1, 2, 3, 4):
        events = await turn(agent, n, tmp_path)
        done = last(events)
        assert isinstance(done, Done)
        outputs.append(done.output)
        expected = "final\n" if n >= 3 else "draft\n"
        assert answer.read_text() == expected, n
    assert "ALL DONE" not in outputs[0]
    assert "ALL DONE" not in outputs[1]
    assert outputs[2].rstrip().endswith("ALL DONE")
    assert outputs[3].rstrip().endswith("ALL DONE")


async def test_done_text_survives_a_full_reply(tmp_path: Path) -> None:
    """The done text is part of the reply the agent reserves for, so it is not clamped
    away (the starter's `notes` loop waits for its done marker)."""
    agent = make(tmp_path, converge_after=1, reply_tokens=60, done_text="ALL DONE")
    done = last(await turn(agent, 1, tmp_path))
    assert isinstance(done, Done)
    assert "ALL DONE" in done.output
    assert done.stop_reason == "end_turn"


async def test_stuck_repeats_the_same_text_and_files(tmp_path: Path) -> None:
    agent = make(tmp_path, behavior="stuck", draft_files={"x.py": "wrong = True\n"})
    texts = set()
    for n in (1, 2, 3):
        (tmp_path / "x.py").write_text("operator edit\n")
        texts.add(text_of(await turn(agent, n, tmp_path)))
        assert (tmp_path / "x.py").read_text() == "wrong = True\n"
    assert len(texts) == 1


async def test_converging_agent_varies_its_text(tmp_path: Path) -> None:
    agent = make(tmp_path, converge_after=10)
    texts = {text_of(await turn(agent, n, tmp_path)) for n in (1, 2, 3)}
    assert len(texts) == 3


async def test_oscillate_alternates_text_and_files(tmp_path: Path) -> None:
    agent = make(
        tmp_path,
        behavior="oscillate",
        draft_files={"v.txt": "A\n"},
        alt_files={"v.txt": "B\n"},
    )
    texts = []
    files = []
    for n in (1, 2, 3, 4):
        texts.append(text_of(await turn(agent, n, tmp_path)))
        files.append((tmp_path / "v.txt").read_text())
    assert texts[0] == texts[2]
    assert texts[1] == texts[3]
    assert texts[0] != texts[1]
    assert files == ["A\n", "B\n", "A\n", "B\n"]


async def test_stall_stops_emitting(tmp_path: Path) -> None:
    agent = make(tmp_path, behavior="stall", stall_after=2, rate=2000)
    assert isinstance(last(await turn(agent, 1, tmp_path)), Done)
    seen: list[AgentEvent] = []
    request = AgentRequest(
        loop="L",
        iteration=2,
        prompt="go",
        workspace=tmp_path,
        budget=LedgerTurnBudget(Ledger("L", Limits())),
    )
    with anyio.move_on_after(0.5) as scope:
        async with agent_events(agent, request) as stream:
            async for event in stream:
                seen.append(event)
    assert scope.cancelled_caught
    deltas = [e for e in seen if isinstance(e, TextDelta)]
    assert 1 <= len(deltas) < 30
    assert not any(isinstance(e, Done | AgentFailed) for e in seen)


async def test_fail_yields_agent_failed(tmp_path: Path) -> None:
    agent = make(tmp_path, behavior="fail", stall_after=2, files={"f.txt": "x"})
    assert isinstance(last(await turn(agent, 1, tmp_path)), Done)
    events = await turn(agent, 2, tmp_path)
    failed = last(events)
    assert isinstance(failed, AgentFailed)
    assert failed.retryable
    assert "iteration 2" in failed.message
    assert failed.output == text_of(events)
    assert not (tmp_path / "f.txt").exists()


async def test_loop_stall_detector_catches_a_stalled_sim(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("staller", behavior="stall", stall_after=1),
        loop("L", "staller", done_marker="DONE", stuck={"stall": "300ms"}, max_iterations=3),
    )
    started = time.monotonic()
    rec = await run_recorded(config, timeout=10)
    assert time.monotonic() - started < 5
    stuck = rec.of(ev.StuckDetected, "L")
    assert [s.detector for s in stuck] == ["stall"]
    assert stuck[0].action == "pause"
    assert rec.result("L").state == "stuck"
    finished = rec.of(ev.IterationFinished, "L")
    assert [f.outcome for f in finished] == ["stuck"]
    assert rec.summary is not None
    assert rec.summary.exit_code == 4
