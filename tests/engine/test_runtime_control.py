"""The operator's control operations against a running Supervisor: pause and resume,
stop, restart, edit (prompt, limits, refused edits), inject, and ops on unknown loops.
"""

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
from runtime_support import ENDLESS, assert_reasons, endless_loop, started, workspaces

from supervisor import events as ev
from supervisor.api import ControlError
from supervisor.spec import Limits

pytestmark = pytest.mark.anyio


# -- control operations ----------------------------------------------------------
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
    # None skipped. One may start twice: a pause that lands while the loop waits for its
    # slot interrupts that iteration, which runs again on resume (a loaded machine).
    assert sorted(set(iterations)) == list(range(1, max(iterations) + 1))
    assert iterations == sorted(iterations)
    assert len(iterations) - len(set(iterations)) <= 1


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
