"""One loop's state machine, run by a real Supervisor on real files and checks:
how it ends (succeeded, failed, stuck, stopped, exhausted), what its prompts
carry, and that every state change it publishes has a reason."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from helpers import (
    GRANDCHILD_SCRIPT,
    Recorded,
    command_agent,
    load,
    loop,
    read_pids,
    run_recorded,
    sim_agent,
    supervisor_table,
    wait_gone,
)

from supervisor import events as ev

pytestmark = pytest.mark.anyio

ANSWER_CHECK = {
    "name": "answer",
    "run": [
        sys.executable,
        "-c",
        "import sys; t = open('answer.txt').read().strip(); "
        "print('expected final, got', t); sys.exit(t != 'final')",
    ],
    "timeout": "10s",
}
FILES = {"draft_files": {"answer.txt": "draft\n"}, "files": {"answer.txt": "final\n"}}


def assert_reasons(rec: Recorded) -> None:
    """Every state change carries a one-line reason, and each loop's last published
    state is the state the summary reports."""
    for change in rec.of(ev.LoopStateChanged):
        assert change.reason.strip(), change
        assert "\n" not in change.reason, change
    assert rec.summary is not None
    for result in rec.summary.loops:
        states = rec.states(result.name)
        assert states, result.name
        assert states[-1] == result.state, (result.name, states)


async def test_converging_loop_succeeds_in_iteration_n(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("s", converge_after=3, **FILES),
        loop("L", "s", checks=[ANSWER_CHECK], max_iterations=6),
    )
    rec = await run_recorded(config)
    result = rec.result("L")
    assert (result.state, result.iterations) == ("succeeded", 3)
    assert "passed" in result.reason
    assert result.reason.endswith("in iteration 3")
    assert (tmp_path / "answer.txt").read_text() == "final\n"
    outcomes = [f.outcome for f in rec.of(ev.IterationFinished, "L")]
    assert outcomes == ["continue", "continue", "succeeded"]
    checks = rec.of(ev.CheckFinished, "L")
    assert [c.passed for c in checks] == [False, False, True]
    assert "expected final, got draft" in checks[0].output
    assert rec.summary is not None
    assert rec.summary.exit_code == 0
    assert result.tokens == sum(u.tokens for u in rec.of(ev.UsageCharged, "L")) > 0
    assert_reasons(rec)


async def test_check_output_and_last_output_reach_the_next_prompt(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("s", converge_after=2, **FILES),
        loop(
            "L",
            "s",
            checks=[ANSWER_CHECK],
            prompt="Loop $loop in $workspace, $iteration/$max_iterations.\n"
            "CHECKS:\n$check_output\nLAST:\n$last_output",
            max_iterations=4,
        ),
    )
    rec = await run_recorded(config)
    first, second = rec.of(ev.IterationStarted, "L")
    assert first.prompt.startswith(f"Loop L in {tmp_path}, 1/4.")
    assert "(no checks have run yet)" in first.prompt
    assert "(no previous output)" in first.prompt
    assert "expected final, got draft" in second.prompt
    reply_1 = "".join(o.text for o in rec.of(ev.AgentOutput, "L") if o.iteration == 1)
    assert reply_1.strip()
    assert second.prompt.rstrip().endswith(reply_1.strip())


async def test_max_iterations_fails_with_its_reason(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("s", converge_after=99, **FILES),
        loop("L", "s", checks=[ANSWER_CHECK], max_iterations=3, stuck={"same_failure": 0}),
    )
    rec = await run_recorded(config)
    result = rec.result("L")
    assert (result.state, result.iterations) == ("failed", 3)
    assert result.reason.startswith("max_iterations (3) reached; last check: answer:")
    assert rec.summary is not None
    assert rec.summary.exit_code == 1
    assert_reasons(rec)


async def test_done_marker_alone_ends_the_loop(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("s", converge_after=2, done_text="ALL DONE"),
        loop("L", "s", done_marker="ALL DONE"),
    )
    rec = await run_recorded(config)
    result = rec.result("L")
    assert (result.state, result.iterations) == ("succeeded", 2)
    assert result.reason == "done marker seen in iteration 2"
    assert not rec.of(ev.CheckStarted)
    finished = rec.of(ev.IterationFinished, "L")
    assert finished[0].reason == "done marker 'ALL DONE' not seen"


async def test_done_marker_and_checks_must_both_hold(tmp_path: Path) -> None:
    # a: says the done word but its file is wrong; b: right file, never says it;
    # c: both, from iteration 2.
    for name in "abc":
        (tmp_path / name).mkdir()
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("says-done", converge_after=1, done_text="DONE", files={"answer.txt": "wrong"}),
        sim_agent("silent", converge_after=1, files={"answer.txt": "final"}),
        sim_agent("both", converge_after=2, done_text="DONE", **FILES),
        loop(
            "a",
            "says-done",
            done_marker="DONE",
            checks=[ANSWER_CHECK],
            max_iterations=2,
            workspace="a",
        ),
        loop(
            "b",
            "silent",
            done_marker="DONE",
            checks=[ANSWER_CHECK],
            max_iterations=2,
            workspace="b",
        ),
        loop(
            "c", "both", done_marker="DONE", checks=[ANSWER_CHECK], max_iterations=3, workspace="c"
        ),
    )
    rec = await run_recorded(config)
    assert rec.result("a").state == "failed"
    assert rec.result("b").state == "failed"
    b_reasons = [f.reason for f in rec.of(ev.IterationFinished, "b")]
    assert b_reasons == ["done marker 'DONE' not seen"] * 2
    assert all(c.passed for c in rec.of(ev.CheckFinished, "b"))
    c = rec.result("c")
    assert (c.state, c.iterations) == ("succeeded", 2)
    assert c.reason.endswith("passed and done marker seen in iteration 2")


STUCK_AGENT = sim_agent("stubborn", behavior="stuck", draft_files={"answer.txt": "draft\n"})


async def test_same_failure_with_on_stuck_pause_leaves_the_loop_stuck(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        STUCK_AGENT,
        loop(
            "L",
            "stubborn",
            checks=[ANSWER_CHECK],
            stuck={"same_failure": 2, "same_output": 0},
            max_iterations=10,
        ),
    )
    rec = await run_recorded(config)
    result = rec.result("L")
    assert (result.state, result.iterations) == ("stuck", 2)
    assert result.reason.startswith("same_failure: ")
    (stuck,) = rec.of(ev.StuckDetected, "L")
    assert (stuck.detector, stuck.action, stuck.iteration) == ("same_failure", "pause", 2)
    assert stuck.evidence
    assert rec.summary is not None
    assert rec.summary.exit_code == 4
    assert "waits for a person" in rec.summary.reason
    assert_reasons(rec)


async def test_same_output_detector_names_its_evidence(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        STUCK_AGENT,
        loop("L", "stubborn", done_marker="DONE", stuck={"same_output": 3}, max_iterations=10),
    )
    rec = await run_recorded(config)
    (stuck,) = rec.of(ev.StuckDetected, "L")
    assert (stuck.detector, stuck.iteration) == ("same_output", 3)
    assert rec.result("L").state == "stuck"


async def test_on_stuck_stop_stops_the_loop(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        STUCK_AGENT,
        loop(
            "L",
            "stubborn",
            checks=[ANSWER_CHECK],
            on_stuck="stop",
            stuck={"same_failure": 2},
            max_iterations=10,
        ),
    )
    rec = await run_recorded(config)
    result = rec.result("L")
    assert (result.state, result.iterations) == ("stopped", 2)
    assert result.reason.startswith("stuck: same_failure")
    assert rec.of(ev.StuckDetected, "L")[0].action == "stop"
    assert rec.summary is not None
    assert rec.summary.exit_code == 1
    assert_reasons(rec)


async def test_on_stuck_continue_keeps_going(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        STUCK_AGENT,
        loop(
            "L",
            "stubborn",
            checks=[ANSWER_CHECK],
            on_stuck="continue",
            stuck={"same_failure": 2, "same_output": 0},
            max_iterations=5,
        ),
    )
    rec = await run_recorded(config)
    result = rec.result("L")
    assert (result.state, result.iterations) == ("failed", 5)
    stuck = rec.of(ev.StuckDetected, "L")
    assert [s.iteration for s in stuck] == [2, 4]
    assert {s.action for s in stuck} == {"continue"}
    assert "stuck" not in rec.states("L")
    outcomes = [f.outcome for f in rec.of(ev.IterationFinished, "L")]
    assert outcomes == ["continue"] * 5


async def test_stall_is_a_stuck_verdict(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("staller", behavior="stall", stall_after=2),
        loop(
            "L",
            "staller",
            done_marker="DONE",
            on_stuck="stop",
            stuck={"stall": "250ms"},
            max_iterations=5,
        ),
    )
    rec = await run_recorded(config)
    result = rec.result("L")
    assert (result.state, result.iterations) == ("stopped", 2)
    assert "stall" in result.reason
    (verdict,) = rec.of(ev.StuckDetected, "L")
    assert verdict.detector == "stall"
    assert [f.outcome for f in rec.of(ev.IterationFinished, "L")] == ["continue", "stuck"]


async def test_loop_token_budget_exhausts_the_loop(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(tokens=100_000),
        sim_agent("chatty", reply_tokens=150, converge_after=99),
        loop("L", "chatty", done_marker="DONE", budget={"tokens": 500}, max_iterations=20),
    )
    rec = await run_recorded(config)
    result = rec.result("L")
    assert result.state == "exhausted"
    assert result.reason == "loop 'L' tokens budget used up"
    assert result.tokens <= 500  # a sim agent is clamped: it never overshoots
    assert rec.supervisor.runners["L"].ledger.overshoot_tokens == 0
    assert rec.summary is not None
    assert rec.summary.exit_code == 1  # only the loop's own budget ran out
    assert_reasons(rec)


async def test_loop_usd_budget_exhausts_the_loop(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("pricey", reply_tokens=100, converge_after=99, usd_per_mtok=1000.0),
        loop("L", "pricey", done_marker="DONE", budget={"usd": 0.25}, max_iterations=20),
    )
    rec = await run_recorded(config)
    result = rec.result("L")
    assert result.state == "exhausted"
    assert "usd budget" in result.reason
    assert result.usd <= 0.25 + 1e-9


async def test_loop_wall_budget_exhausts_the_loop(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("slow", rate=20, reply_tokens=200, converge_after=99),
        loop("L", "slow", done_marker="DONE", budget={"wall": "600ms"}),
    )
    started = time.monotonic()
    rec = await run_recorded(config)
    assert time.monotonic() - started < 3
    result = rec.result("L")
    assert result.state == "exhausted"
    assert result.reason == "loop wall budget (600ms) used up"
    assert_reasons(rec)


async def test_agent_failure_without_retries_fails_the_loop(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("crashy", behavior="fail", stall_after=1),
        loop("L", "crashy", done_marker="DONE", budget={"retries": 0}),
    )
    rec = await run_recorded(config)
    result = rec.result("L")
    assert result.state == "failed"
    assert "simulated agent crashed in iteration 1" in result.reason
    assert "0 retries used" in result.reason


async def test_loop_wall_budget_kills_a_running_command_agent(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        command_agent("sleeper", GRANDCHILD_SCRIPT),
        loop("L", "sleeper", done_marker="DONE", budget={"wall": "1s"}),
    )
    started = time.monotonic()
    rec = await run_recorded(config)
    assert time.monotonic() - started < 6
    result = rec.result("L")
    assert result.state == "exhausted"
    assert result.reason == "loop wall budget (1s) used up"
    pids = read_pids(tmp_path / "pids.txt")
    assert len(pids) == 2
    assert wait_gone(pids, timeout=3) == []
