"""The Supervisor: several loops under one global budget and a slot limit, and the
operator's control operations against a running supervisor."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from helpers import (
    GRANDCHILD_SCRIPT,
    Recorded,
    alive,
    command_agent,
    load,
    loop,
    read_pids,
    run_recorded,
    sim_agent,
    supervisor_table,
    wait_event,
    wait_for,
    wait_gone,
)

from supervisor import events as ev
from supervisor.api import ControlError
from supervisor.spec import Limits

pytestmark = pytest.mark.anyio


def workspaces(tmp_path: Path, *names: str) -> None:
    for name in names:
        (tmp_path / name).mkdir()


def assert_reasons(rec: Recorded) -> None:
    for change in rec.of(ev.LoopStateChanged):
        assert change.reason.strip(), change
    assert rec.summary is not None
    for result in rec.summary.loops:
        assert rec.states(result.name)[-1] == result.state, (result.name, rec.states(result.name))


# -- global budget, slots, summary -------------------------------------------------
async def test_global_token_budget_exhausts_every_loop(tmp_path: Path) -> None:
    names = ["a", "b", "c", "d"]
    workspaces(tmp_path, *names)
    config = load(
        tmp_path,
        supervisor_table(max_concurrent=4, tokens=1000),
        sim_agent("chatty", reply_tokens=120, converge_after=99),
        *(loop(n, "chatty", workspace=n, done_marker="DONE", max_iterations=50) for n in names),
    )
    rec = await run_recorded(config)
    assert rec.summary is not None
    assert rec.summary.exit_code == 2
    assert [r.state for r in rec.summary.loops] == ["exhausted"] * 4
    for r in rec.summary.loops:
        assert "global" in r.reason, r
    stats = rec.supervisor.ledger.statistics()
    assert stats.tokens_spent <= 1000
    assert stats.overshoot_tokens == 0
    assert stats.tokens_reserved == 0
    assert rec.summary.tokens == stats.tokens_spent == sum(r.tokens for r in rec.summary.loops)
    assert_reasons(rec)


async def test_global_budget_with_a_prompt_too_big_for_what_is_left(tmp_path: Path) -> None:
    """The last tokens cannot pay for another prompt: the budget is used up for every
    practical purpose, so the loops end exhausted and the run exits 2 (not 1)."""
    workspaces(tmp_path, "a", "b")
    config = load(
        tmp_path,
        supervisor_table(max_concurrent=2, tokens=1000),
        sim_agent("big-prompt", input_tokens=300, reply_tokens=30, converge_after=99),
        loop("a", "big-prompt", workspace="a", done_marker="DONE", max_iterations=50),
        loop("b", "big-prompt", workspace="b", done_marker="DONE", max_iterations=50),
    )
    rec = await run_recorded(config)
    assert rec.summary is not None
    assert [r.state for r in rec.summary.loops] == ["exhausted", "exhausted"]
    assert rec.supervisor.ledger.tokens_spent <= 1000
    assert rec.summary.exit_code == 2
    assert_reasons(rec)


async def test_global_wall_budget_exhausts_every_loop(tmp_path: Path) -> None:
    workspaces(tmp_path, "a", "b")
    config = load(
        tmp_path,
        supervisor_table(wall="700ms"),
        sim_agent("slow", rate=40, reply_tokens=400),
        loop("a", "slow", workspace="a", done_marker="DONE"),
        loop("b", "slow", workspace="b", done_marker="DONE"),
    )
    started = time.monotonic()
    rec = await run_recorded(config)
    assert time.monotonic() - started < 3
    assert rec.summary is not None
    assert rec.summary.exit_code == 2
    assert [r.state for r in rec.summary.loops] == ["exhausted", "exhausted"]
    assert "wall" in rec.summary.reason
    assert_reasons(rec)


SLOT_SCRIPT = (
    "import os, sys, time\n"
    "log = open(sys.argv[1], 'a')\n"
    "log.write(f'start {time.time()} {os.environ[\"LOOPVISOR_LOOP\"]}\\n'); log.flush()\n"
    "time.sleep(0.3)\n"
    "log.write(f'end {time.time()} {os.environ[\"LOOPVISOR_LOOP\"]}\\n'); log.flush()\n"
    "print('DONE')\n"
)


async def test_max_concurrent_caps_agent_turns_at_once(tmp_path: Path) -> None:
    names = [f"l{i}" for i in range(6)]
    workspaces(tmp_path, *names)
    log = tmp_path / "turns.log"
    config = load(
        tmp_path,
        supervisor_table(max_concurrent=2),
        command_agent("worker", SLOT_SCRIPT, str(log)),
        *(loop(n, "worker", workspace=n, done_marker="DONE") for n in names),
    )
    rec = await run_recorded(config, timeout=20)
    assert rec.summary is not None
    assert [r.state for r in rec.summary.loops] == ["succeeded"] * 6
    marks = []
    for line in log.read_text().splitlines():
        kind, stamp, _name = line.split()
        marks.append((float(stamp), 0 if kind == "end" else 1))
    running = peak = 0
    for _stamp, delta in sorted(marks):
        running += 1 if delta else -1
        peak = max(peak, running)
    assert peak == 2
    waiting = [s for s in rec.of(ev.LoopStateChanged) if s.state == "waiting"]
    assert waiting
    assert {w.reason for w in waiting} == {"waiting for a free slot"}
    assert_reasons(rec)


async def test_summary_lists_loops_in_run_order(tmp_path: Path) -> None:
    workspaces(tmp_path, "slow", "fast", "mid")
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("s", rate=200, reply_tokens=20, converge_after=3, done_text="DONE"),
        sim_agent("f", converge_after=1, done_text="DONE"),
        loop("slow", "s", workspace="slow", done_marker="DONE"),
        loop("fast", "f", workspace="fast", done_marker="DONE"),
        loop("mid", "s", workspace="mid", done_marker="DONE", max_iterations=1),
    )
    rec = await run_recorded(config)
    assert rec.summary is not None
    assert [r.name for r in rec.summary.loops] == ["slow", "fast", "mid"]
    assert [(r.state, r.iterations) for r in rec.summary.loops] == [
        ("succeeded", 3),
        ("succeeded", 1),
        ("failed", 1),
    ]
    ended = [s.loop for s in rec.of(ev.LoopStateChanged) if s.state in ev.END_STATES]
    assert ended.index("fast") < ended.index("slow")  # finished first, listed second
    assert rec.summary.exit_code == 1
    assert isinstance(rec.events[0], ev.RunStarted)
    assert rec.events[0].loops == ("slow", "fast", "mid")
    assert rec.events[-1] is rec.summary
    assert_reasons(rec)


# -- control operations ----------------------------------------------------------
ENDLESS = sim_agent("endless", rate=1000, reply_tokens=20, converge_after=10_000)


def endless_loop(name: str = "L", **keys: object) -> str:
    keys.setdefault("max_iterations", 1000)
    keys.setdefault("stuck", {"same_output": 0})
    return loop(name, "endless", done_marker="NEVER", **keys)


def started(rec: Recorded, loop_name: str = "L") -> list[int]:
    return [s.iteration for s in rec.of(ev.IterationStarted, loop_name)]


async def test_pause_stops_new_iterations_and_resume_continues(tmp_path: Path) -> None:
    config = load(tmp_path, supervisor_table(), ENDLESS, endless_loop())

    async def during(rec: Recorded) -> None:
        sup = rec.supervisor
        await wait_for(lambda: len(started(rec)) >= 2)
        await sup.pause("L")
        await wait_for(lambda: sup.runners["L"].state == "paused")
        count = len(started(rec))
        await anyio.sleep(0.4)
        assert len(started(rec)) == count  # nothing new while paused
        assert sup.snapshot_now().loops[0].state == "paused"
        await sup.resume("L")
        await wait_for(lambda: len(started(rec)) >= count + 2)
        await sup.stop("L")

    rec = await run_recorded(config, exit_when_idle=False, during=during)
    states = rec.states("L")
    assert "paused" in states
    i = states.index("paused")
    assert states[i + 1] == "pending"
    paused = rec.of(ev.LoopStateChanged, "L")[i]
    assert paused.reason == "paused by the operator"
    assert rec.result("L").state == "stopped"
    ops = [c.op for c in rec.of(ev.ControlApplied)]
    assert ops == ["pause", "resume", "stop"]
    iterations = started(rec)
    assert iterations == list(range(1, len(iterations) + 1))  # none skipped, none repeated


async def test_paused_run_ends_with_exit_4_in_headless_mode(tmp_path: Path) -> None:
    config = load(tmp_path, supervisor_table(), ENDLESS, endless_loop())

    async def during(rec: Recorded) -> None:
        await wait_for(lambda: len(started(rec)) >= 1)
        await rec.supervisor.pause()

    rec = await run_recorded(config, during=during)
    assert rec.summary is not None
    assert rec.summary.exit_code == 4
    assert rec.result("L").state == "paused"


async def test_stop_kills_a_running_command_agent(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        command_agent("sleeper", GRANDCHILD_SCRIPT),
        loop("L", "sleeper", done_marker="DONE"),
    )
    pids_file = tmp_path / "pids.txt"

    async def during(rec: Recorded) -> None:
        await wait_for(lambda: len(read_pids(pids_file)) == 2)
        assert len(alive(read_pids(pids_file))) == 2
        await rec.supervisor.stop("L")

    started_at = time.monotonic()
    rec = await run_recorded(config, during=during)
    assert time.monotonic() - started_at < 8
    result = rec.result("L")
    assert result.state == "stopped"
    assert result.reason == "stopped by the operator"
    assert wait_gone(read_pids(pids_file), timeout=3) == []
    assert rec.summary is not None
    assert rec.summary.exit_code == 1
    assert_reasons(rec)


async def test_restart_goes_back_to_iteration_1(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("s", rate=150, reply_tokens=30, converge_after=3, done_text="DONE"),
        loop("L", "s", done_marker="DONE", max_iterations=5),
    )

    async def during(rec: Recorded) -> None:
        await wait_event(rec, ev.IterationStarted, loop="L", where=lambda e: e.iteration == 2)
        await rec.supervisor.restart("L")

    rec = await run_recorded(config, during=during)
    assert started(rec) == [1, 2, 1, 2, 3]
    result = rec.result("L")
    assert (result.state, result.iterations) == ("succeeded", 3)
    assert "restarted by the operator" in [s.reason for s in rec.of(ev.LoopStateChanged, "L")]
    assert_reasons(rec)


async def test_restart_a_finished_loop_runs_it_again(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("s", converge_after=2, done_text="DONE"),
        loop("L", "s", done_marker="DONE"),
    )

    async def during(rec: Recorded) -> None:
        sup = rec.supervisor
        await wait_for(lambda: sup.runners["L"].state == "succeeded")
        await sup.restart("L")
        await wait_for(lambda: rec.states("L").count("succeeded") == 2)

    rec = await run_recorded(config, exit_when_idle=False, during=during)
    assert started(rec) == [1, 2, 1, 2]


async def test_edit_changes_the_next_prompt_and_limits(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("s", rate=300, reply_tokens=20, converge_after=10_000),
        loop(
            "L",
            "s",
            done_marker="NEVER",
            prompt="v1 $iteration",
            max_iterations=100,
            stuck={"same_output": 0},
        ),
    )

    async def during(rec: Recorded) -> None:
        await wait_event(rec, ev.IterationStarted, loop="L", where=lambda e: e.iteration == 1)
        await rec.supervisor.edit("L", prompt="v2 of $loop, $iteration/$max_iterations")
        await rec.supervisor.edit("L", max_iterations=4)

    rec = await run_recorded(config, during=during)
    prompts = [s.prompt for s in rec.of(ev.IterationStarted, "L")]
    assert prompts[0] == "v1 1"
    assert prompts[1:] == [f"v2 of L, {n}/4" for n in range(2, 5)]
    result = rec.result("L")
    assert (result.state, result.iterations) == ("failed", 4)
    assert result.reason.startswith("max_iterations (4) reached")
    details = [c.detail for c in rec.of(ev.ControlApplied) if c.op == "edit"]
    assert details == ["prompt", "max_iterations"]


async def test_edit_limits_take_effect(tmp_path: Path) -> None:
    config = load(tmp_path, supervisor_table(), ENDLESS, endless_loop())

    async def during(rec: Recorded) -> None:
        await wait_for(lambda: len(started(rec)) >= 1)
        spent = rec.supervisor.runners["L"].ledger.tokens_spent
        await rec.supervisor.edit("L", limits=Limits(tokens=spent + 300))

    rec = await run_recorded(config, during=during)
    result = rec.result("L")
    assert result.state == "exhausted"
    assert result.reason == "loop 'L' tokens budget used up"


async def test_invalid_edits_are_refused(tmp_path: Path) -> None:
    config = load(tmp_path, supervisor_table(), ENDLESS, endless_loop())

    async def during(rec: Recorded) -> None:
        sup = rec.supervisor
        await wait_for(lambda: len(started(rec)) >= 1)
        with pytest.raises(ControlError, match="bogus"):
            await sup.edit("L", prompt="use $bogus here")
        with pytest.raises(ControlError, match="max_iterations"):
            await sup.edit("L", max_iterations=0)
        with pytest.raises(ControlError, match=r"budget\.tokens"):
            await sup.edit("L", limits=Limits(tokens=-5))
        with pytest.raises(ControlError, match="no loop named 'nope'"):
            await sup.edit("nope", max_iterations=3)
        with pytest.raises(ControlError):
            await sup.inject("L", "   ")
        with pytest.raises(ControlError, match="step in first"):
            await sup.chat("L", "hello")
        await sup.stop()

    rec = await run_recorded(config, during=during)
    assert not [c for c in rec.of(ev.ControlApplied) if c.op == "edit"]
    assert all(not s.prompt.startswith("use") for s in rec.of(ev.IterationStarted))


async def test_inject_reaches_the_next_prompt_exactly_once(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("s", rate=300, reply_tokens=20, converge_after=10_000),
        loop("L", "s", done_marker="NEVER", max_iterations=4, stuck={"same_output": 0}),
    )

    async def during(rec: Recorded) -> None:
        await wait_event(rec, ev.IterationStarted, loop="L", where=lambda e: e.iteration == 1)
        await rec.supervisor.inject("L", "use tabs, not spaces")

    rec = await run_recorded(config, during=during)
    prompts = [s.prompt for s in rec.of(ev.IterationStarted, "L")]
    assert len(prompts) == 4
    note = "Operator note: use tabs, not spaces"
    assert [p.count(note) for p in prompts] == [0, 1, 0, 0]
    (control,) = [c for c in rec.of(ev.ControlApplied) if c.op == "inject"]
    assert control.detail == "use tabs, not spaces"


async def test_step_in_chat_and_hand_back_on_a_sim_loop(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("s", rate=100, reply_tokens=60, converge_after=2, done_text="DONE"),
        loop("L", "s", done_marker="DONE", max_iterations=5),
    )
    replies: list[str] = []

    async def during(rec: Recorded) -> None:
        sup = rec.supervisor
        await wait_event(rec, ev.AgentOutput, loop="L")  # mid-turn of iteration 1
        step = await sup.step_in("L")
        assert step.loop == "L"
        assert step.agent_kind == "sim"
        assert step.chat
        assert step.resume_argv is None
        assert step.workspace == str(tmp_path)
        assert sup.runners["L"].state == "paused"
        replies.append(await sup.chat("L", "what are you doing?"))
        await sup.hand_back("L")

    rec = await run_recorded(config, exit_when_idle=False, during=during)
    assert replies
    assert replies[0].strip()
    operator = [o for o in rec.of(ev.AgentOutput, "L") if o.stream == "operator"]
    assert [o.text for o in operator] == ["what are you doing?\n"]
    outcomes = [(f.iteration, f.outcome) for f in rec.of(ev.IterationFinished, "L")]
    assert outcomes == [(1, "interrupted"), (1, "continue"), (2, "succeeded")]
    result = rec.result("L")
    assert (result.state, result.iterations) == ("succeeded", 2)
    ops = [c.op for c in rec.of(ev.ControlApplied)]
    assert ops == ["step_in", "chat", "hand_back", "resume"]
    assert_reasons(rec)


async def test_step_in_on_a_stuck_loop_then_hand_back_runs_a_normal_iteration(
    tmp_path: Path,
) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("stubborn", behavior="stuck"),
        loop("L", "stubborn", done_marker="DONE", stuck={"same_output": 2}, max_iterations=3),
    )

    async def during(rec: Recorded) -> None:
        sup = rec.supervisor
        await wait_for(lambda: sup.runners["L"].state == "stuck")
        await sup.step_in("L")
        assert sup.runners["L"].state == "stuck"
        assert (await sup.chat("L", "try something else")).strip()
        await sup.hand_back("L")
        await wait_for(lambda: sup.runners["L"].finished)

    rec = await run_recorded(config, exit_when_idle=False, during=during)
    outcomes = [(f.iteration, f.outcome) for f in rec.of(ev.IterationFinished, "L")]
    assert outcomes == [(1, "continue"), (2, "stuck"), (3, "continue")]
    assert rec.result("L").state == "failed"


async def test_control_ops_on_unknown_loops_raise(tmp_path: Path) -> None:
    config = load(tmp_path, supervisor_table(), ENDLESS, endless_loop())

    async def during(rec: Recorded) -> None:
        sup = rec.supervisor
        await wait_for(lambda: len(started(rec)) >= 1)
        for op in (sup.pause, sup.resume, sup.stop, sup.restart, sup.step_in):
            with pytest.raises(ControlError, match="no loop named 'x'"):
                await op("x")
        with pytest.raises(ControlError):
            await sup.inject("x", "hi")
        await sup.stop()

    rec = await run_recorded(config, during=during)
    assert rec.result("L").state == "stopped"


async def test_restart_kills_a_running_command_agent_and_starts_over(tmp_path: Path) -> None:
    script = (
        "import os, sys, subprocess, time\n"
        "if sys.argv[1] == '2':\n"
        "    print('DONE')\n"
        "    raise SystemExit(0)\n"
        "child = subprocess.Popen(['sleep', '30'])\n"
        "open('pids.txt', 'a').write(f'{os.getpid()} {child.pid} ')\n"
        "time.sleep(30)\n"
    )
    config = load(
        tmp_path,
        supervisor_table(),
        command_agent("cli", script, "$iteration"),
        loop("L", "cli", done_marker="NOT-YET", max_iterations=1),
    )
    pids_file = tmp_path / "pids.txt"

    async def during(rec: Recorded) -> None:
        await wait_for(lambda: len(read_pids(pids_file)) == 2)
        await rec.supervisor.restart("L")
        await wait_for(lambda: len(read_pids(pids_file)) == 4)
        await rec.supervisor.stop("L")

    rec = await run_recorded(config, during=during)
    assert started(rec) == [1, 1]
    assert wait_gone(read_pids(pids_file), timeout=3) == []
    assert rec.result("L").state == "stopped"


async def test_step_in_on_a_command_loop_kills_its_turn(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        command_agent("sleeper", GRANDCHILD_SCRIPT),
        loop("L", "sleeper", done_marker="DONE"),
    )
    pids_file = tmp_path / "pids.txt"

    async def during(rec: Recorded) -> None:
        await wait_for(lambda: len(read_pids(pids_file)) == 2)
        step = await rec.supervisor.step_in("L")
        assert (step.agent_kind, step.chat) == ("command", False)
        assert rec.supervisor.runners["L"].state == "paused"
        assert wait_gone(read_pids(pids_file), timeout=3) == []

    rec = await run_recorded(config, during=during)
    assert rec.result("L").state == "paused"
    assert [(f.iteration, f.outcome) for f in rec.of(ev.IterationFinished, "L")] == [
        (1, "interrupted")
    ]


async def test_global_usd_budget_ends_the_run_with_exit_2(tmp_path: Path) -> None:
    workspaces(tmp_path, "a", "b")
    config = load(
        tmp_path,
        supervisor_table(usd=0.5),
        sim_agent("pricey", reply_tokens=100, converge_after=99, usd_per_mtok=1000.0),
        loop("a", "pricey", workspace="a", done_marker="DONE", max_iterations=50),
        loop("b", "pricey", workspace="b", done_marker="DONE", max_iterations=50),
    )
    rec = await run_recorded(config)
    assert rec.summary is not None
    assert rec.summary.exit_code == 2
    assert [r.state for r in rec.summary.loops] == ["exhausted", "exhausted"]
    assert rec.summary.usd <= 0.5 + 1e-9
    assert_reasons(rec)


async def test_global_cpu_budget_ends_the_run_with_exit_2(tmp_path: Path) -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass"
    workspaces(tmp_path, "a", "b")
    config = load(
        tmp_path,
        supervisor_table(cpu="500ms"),
        command_agent("burner", burn),
        loop("a", "burner", workspace="a", done_marker="DONE", max_iterations=20),
        loop("b", "burner", workspace="b", done_marker="DONE", max_iterations=20),
    )
    rec = await run_recorded(config)
    assert rec.summary is not None
    assert rec.summary.exit_code == 2
    assert [r.state for r in rec.summary.loops] == ["exhausted", "exhausted"]
    assert "cpu" in rec.summary.reason
    assert rec.supervisor.ledger.cpu_spent >= 0.5
    assert_reasons(rec)


async def test_a_slow_subscriber_loses_events_but_is_told_how_many() -> None:
    from supervisor.bus import EventBus

    bus = EventBus()
    seen_by_sink: list[ev.Event] = []
    bus.add_sink(seen_by_sink.append)
    notices = [ev.Notice(message=str(i)) for i in range(6)]
    async with bus.subscribe(max_buffer=2) as events:
        for notice in notices[:5]:
            bus.publish(notice)  # never blocks, even though nobody reads
        first = [await events.receive(), await events.receive()]
        bus.publish(notices[5])
        rest = [await events.receive(), await events.receive()]
    assert seen_by_sink == notices  # sinks are lossless
    assert first == notices[:2]
    assert isinstance(rest[0], ev.EventsDropped)
    assert rest[0].count == 3
    assert rest[1] is notices[5]
    stats = bus.statistics()
    assert (stats.published, stats.dropped, stats.subscribers) == (6, 3, 0)


async def test_step_in_while_waiting_for_a_slot_pauses_at_once(tmp_path: Path) -> None:
    """No turn has started, so nothing is thrown away and nobody waits for the slot."""
    workspaces(tmp_path, "a", "b")
    config = load(
        tmp_path,
        supervisor_table(max_concurrent=1),
        sim_agent("slow", rate=100, reply_tokens=150, converge_after=99),
        loop("a", "slow", workspace="a", done_marker="X", max_iterations=1),
        loop("b", "slow", workspace="b", done_marker="X", max_iterations=1),
    )
    took: list[float] = []
    b_tokens_when_paused: list[int] = []

    async def during(rec: Recorded) -> None:
        sup = rec.supervisor
        await wait_for(lambda: sup.runners["b"].state == "waiting")
        t = time.monotonic()
        await sup.step_in("b")
        took.append(time.monotonic() - t)
        assert sup.runners["b"].state == "paused"
        b_tokens_when_paused.append(sup.runners["b"].ledger.tokens_spent)
        await sup.hand_back("b")

    rec = await run_recorded(config, exit_when_idle=False, during=during)
    assert took[0] < 0.5  # a's 1.5 s turn is still running
    assert b_tokens_when_paused == [0]
    outcomes = [(f.loop, f.iteration, f.outcome) for f in rec.of(ev.IterationFinished)]
    assert ("b", 1, "continue") in outcomes
    assert [o for o in outcomes if o[0] == "b"] == [("b", 1, "interrupted"), ("b", 1, "continue")]
    assert next(f for f in rec.of(ev.IterationFinished, "b")).tokens == 0
    assert rec.result("b").state == "failed"  # max_iterations 1, no done marker


async def test_restart_while_waiting_for_a_slot_wastes_no_turn(tmp_path: Path) -> None:
    workspaces(tmp_path, "a", "b")
    config = load(
        tmp_path,
        supervisor_table(max_concurrent=1),
        sim_agent("slow", rate=200, reply_tokens=100, converge_after=99),
        loop("a", "slow", workspace="a", done_marker="X", max_iterations=1),
        loop("b", "slow", workspace="b", done_marker="X", max_iterations=1),
    )

    async def during(rec: Recorded) -> None:
        sup = rec.supervisor
        await wait_for(lambda: sup.runners["b"].state == "waiting")
        await sup.restart("b")

    rec = await run_recorded(config, during=during)
    b_turns = [f for f in rec.of(ev.IterationFinished, "b")]
    assert [(f.iteration, f.outcome) for f in b_turns] == [(1, "stopped"), (1, "continue")]
    assert b_turns[0].tokens == 0
    assert rec.result("b").tokens == b_turns[1].tokens


async def test_edit_of_the_wall_limit_is_honoured(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        ENDLESS,
        endless_loop(budget={"wall": "30s"}),
    )

    async def during(rec: Recorded) -> None:
        await wait_for(lambda: len(started(rec)) >= 1)
        await rec.supervisor.edit("L", limits=Limits(wall=1.0))

    began = time.monotonic()
    rec = await run_recorded(config, during=during, timeout=15)
    assert time.monotonic() - began < 5
    result = rec.result("L")
    assert result.state == "exhausted"
    assert result.reason == "loop wall budget (1s) used up"
