"""The kill -9 matrix: a real `loopvisor run --json` child SIGKILLed at a precise
moment (mid agent stream, mid check, mid agent turn), then `run --resume` to the end
in a second child; and a second supervisor on a live state dir, a corrupt journal.

The moment is found from the child's own JSON lines as they arrive (a reader thread)
and, where the assertion depends on it, from what the journal has committed (a
read-only SQLite connection beside the live writer): never a blind sleep.

After the resume every case checks, from `loopvisor history LOOP --json`, the
journal and the final summary: iterations are contiguous per loop (the killed one
appears once as `interrupted` and the same number runs again), no loop started
over, a loop that had finished is not run again, the summary counts iterations
across the crash, the ledger equals what the agents reported, and nothing the killed
supervisor started is left running. The same with the Messages API:
test_resume_api.py; under random kills mid journal write:
test_resume_random_kills.py; the machinery: tests/resume_support.py.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
from pathlib import Path

from helpers import (
    alive,
    command_agent,
    loop,
    run_cli,
    sim_agent,
    supervisor_table,
    wait_gone,
    write_config,
)
from resume_support import (
    RESULT_CHECK,
    SEEN_NOTE,
    Harness,
    Session,
    assert_contiguous,
    attempts,
    charged,
    journal_events,
    lines_of,
    loop_state,
    pgid_alive,
    reserve_rows,
    result,
    settlements,
    usage_tokens,
)

from supervisor.journal.schema import JOURNAL_NAME


# -- 1. mid-iteration: the agent is streaming ------------------------------------------
def test_sim_killed_mid_stream_resumes_that_iteration_and_charges_what_was_reported(
    harness: Harness,
) -> None:
    h = harness
    for name in ("slow", "done"):
        (h.tmp_path / name).mkdir()
    write_config(
        h.tmp_path,
        supervisor_table(max_concurrent=4, tokens=100_000),
        sim_agent("slow", rate=100, reply_tokens=60, converge_after=3, files={"result.txt": "ok"}),
        sim_agent("quick", converge_after=1, files={"result.txt": "ok"}),
        loop("slow", "slow", workspace="slow", checks=[RESULT_CHECK], max_iterations=6),
        loop("done", "quick", workspace="done", checks=[RESULT_CHECK], max_iterations=3),
    )
    first = h.start()
    first.wait_for(
        "slow streaming iteration 2",
        lambda e: (
            e["type"] == "usage"
            and e["loop"] == "slow"
            and e["iteration"] == 2
            and e["output_tokens"] > 0
        ),
    )
    # The sim reports usage every 16 tokens (160 ms apart): kill once the journal holds
    # every usage event printed so far, so "what the agent reported" is exactly known.
    first.until(
        "the journal to commit the usage printed so far",
        lambda: (
            len(journal_events(h.state, "usage", "slow")) == len(first.of("usage", "slow"))
            and loop_state(h.state, "done") == "succeeded"
        ),
    )
    first.kill9()
    reported_before = {n: usage_tokens(first.events, n) for n in ("slow", "done")}
    assert [e["loop"] for e in first.of("usage")] == [
        e["loop"] for e in journal_events(h.state, "usage")
    ]

    assert attempts(h.history("slow")) == [(1, "continue"), (2, "interrupted")]
    assert attempts(h.history("done")) == [(1, "succeeded")]
    status = h.status()
    assert status["live"] is False
    assert {r["name"]: r["state"] for r in status["loops"]} == {
        "slow": "running",
        "done": "succeeded",
    }

    second, summary = h.resume_to_end()
    assert summary["exit_code"] == 0
    run = second.of("run_started")[0]
    assert run["resumed"] is True
    assert run["run_id"] == first.of("run_started")[0]["run_id"]
    notes = [e["message"] for e in second.of("notice")]
    assert "slow: iteration 2 was interrupted and runs again" in notes
    # The open request was charged up to its reservation (seen once + the unseen rest).
    assert any(m.startswith("slow: ") and "charged at the reservation" in m for m in notes)
    # Finished stays finished; the slow loop continues at the interrupted iteration.
    assert second.of("iteration_started", "done") == []
    started = second.of("iteration_started", "slow")
    assert [e["iteration"] for e in started] == [2, 3]
    assert "Iteration 2 of 6" in started[0]["prompt"]
    slow = h.history("slow")
    assert_contiguous(slow, "slow")
    assert attempts(slow) == [
        (1, "continue"),
        (2, "interrupted"),
        (2, "continue"),
        (3, "succeeded"),
    ]
    assert attempts(h.history("done")) == [(1, "succeeded")]
    assert lines_of(h.tmp_path / "slow/checks.log") == ["1", "2", "3"]
    assert lines_of(h.tmp_path / "done/checks.log") == ["1"]
    assert (result(summary, "slow")["iterations"], result(summary, "done")["iterations"]) == (3, 1)

    # The ledger is what the agents reported, across both sessions, charged once, plus
    # the unseen rest of the one reservation the crash left open.
    (rest_charge, rest_release) = settlements(h.state)
    assert rest_charge[0::2] == ("charge", SEEN_NOTE)
    assert rest_release == ("release", 0, SEEN_NOTE)
    rest = rest_charge[1]
    held = int(reserve_rows(h.state, "slow", 2)[-1]["tokens"])
    assert rest == held - usage_tokens(first.events, "slow", 2) > 0
    for name, extra in (("slow", rest), ("done", 0)):
        reported = reported_before[name] + usage_tokens(second.events, name)
        assert charged(h.state, name) == reported + extra == result(summary, name)["tokens"]
    assert summary["tokens"] == charged(h.state)
    assert slow[1]["tokens"] == usage_tokens(first.events, "slow", 2) + rest


def assert_reaped(session: Session, pids: list[int]) -> None:
    """The resumed session's first notice names the killed leftovers."""
    (notice,) = [e for e in session.of("notice") if "left running" in e["message"]]
    assert notice["level"] == "warning"
    assert notice["message"].endswith(", ".join(map(str, sorted(pids))))
    assert session.events.index(notice) < session.events.index(session.of("iteration_started")[0])


# -- 2. mid-check: the supervisor dies while a check runs ------------------------------
def test_killed_mid_check_reruns_the_iteration_and_leaves_no_check_running(
    harness: Harness,
) -> None:
    h = harness
    (h.tmp_path / "w").mkdir()
    write_config(
        h.tmp_path,
        supervisor_table(max_concurrent=2, tokens=100_000),
        sim_agent("sim", reply_tokens=30, converge_after=3, files={"result.txt": "ok"}),
        loop("w", "sim", workspace="w", checks=[RESULT_CHECK], max_iterations=6),
    )
    # In the killed session the check of iteration 2 sleeps far longer than the resume
    # takes: if it survives its supervisor, it is still there at the end.
    first = h.start(env={"CHECK_SLEEP": "20"})
    first.wait_for(
        "the check of iteration 2",
        lambda e: e["type"] == "check_started" and e["iteration"] == 2,
    )
    first.until(
        "the check to run and the journal to hold its start",
        lambda: (
            len(lines_of(h.tmp_path / "w/check.pids")) == 2
            and len(journal_events(h.state, "check_started")) == 2
        ),
    )
    first.kill9()
    check_group = int(lines_of(h.tmp_path / "w/check.pids")[1])
    h.groups.add(check_group)
    orphaned = pgid_alive(check_group)
    assert attempts(h.history("w")) == [(1, "continue"), (2, "interrupted")]
    # The turn was over: its reservation was released, all its usage is in the journal.
    assert usage_tokens(first.events, "w") == charged(h.state, "w") > 0

    second, summary = h.resume_to_end(env={"CHECK_SLEEP": "0"})
    assert summary["exit_code"] == 0
    w = h.history("w")
    assert_contiguous(w, "w")
    assert attempts(w) == [(1, "continue"), (2, "interrupted"), (2, "continue"), (3, "succeeded")]
    assert lines_of(h.tmp_path / "w/checks.log") == ["1", "2", "2", "3"]
    assert result(summary, "w")["iterations"] == 3
    reported = usage_tokens(first.events, "w") + usage_tokens(second.events, "w")
    assert charged(h.state, "w") == reported == result(summary, "w")["tokens"]
    assert settlements(h.state) == []  # nothing was open at the crash
    # The killed supervisor's check outlived it (its own process group), and the
    # resume killed it before running anything, and said so.
    assert orphaned, "the check was not running at the kill"
    assert wait_gone(orphaned, timeout=1.0) == [], (
        f"check group {check_group} of the killed supervisor still runs: {orphaned}"
    )
    assert_reaped(second, orphaned)


# An agent that starts a grandchild and sleeps AGENT_SLEEP seconds (from the
# supervisor's environment) before its answer; DONE from iteration 2 on.
SLEEPY_AGENT = (
    "import os, subprocess, sys, time\n"
    "n = int(os.environ['LOOPVISOR_ITERATION'])\n"
    "pause = float(os.environ.get('AGENT_SLEEP', '0'))\n"
    "child = subprocess.Popen(['sleep', str(pause + 1)])\n"
    "with open('agent.pids', 'a') as fh:\n"
    "    fh.write(f'{os.getpid()} {child.pid}\\n')\n"
    "print(f'working on iteration {n}', flush=True)\n"
    "time.sleep(pause)\n"
    "print('DONE' if n >= 2 else 'not yet', flush=True)\n"
)


def test_killed_mid_agent_turn_leaves_no_agent_running(harness: Harness) -> None:
    h = harness
    (h.tmp_path / "c").mkdir()
    write_config(
        h.tmp_path,
        supervisor_table(max_concurrent=1),
        command_agent("cli", SLEEPY_AGENT, pass_env=["AGENT_SLEEP"]),
        loop("c", "cli", workspace="c", done_marker="DONE", max_iterations=4),
    )
    first = h.start(env={"AGENT_SLEEP": "20"})
    first.wait_for(
        "the agent's first line",
        lambda e: e["type"] == "output" and "working on iteration 1" in e["text"],
    )
    first.kill9()
    pids = [int(p) for p in lines_of(h.tmp_path / "c/agent.pids")]
    h.groups.add(pids[0])
    orphaned = alive(pids)

    second, summary = h.resume_to_end(env={"AGENT_SLEEP": "0"})
    assert summary["exit_code"] == 0
    c = h.history("c")
    assert_contiguous(c, "c")
    assert attempts(c) == [(1, "interrupted"), (1, "continue"), (2, "succeeded")]
    assert orphaned == pids, "the agent was not running at the kill"
    assert wait_gone(pids, timeout=1.0) == [], "the killed supervisor's agent still runs"
    assert_reaped(second, pids)
    # Three agents ran (two pids each): the killed one, iteration 1 again, iteration 2.
    assert len(lines_of(h.tmp_path / "c/agent.pids")) == 6


# -- a second supervisor, a corrupt journal ---------------------------------------------
GATED_AGENT = (
    "import os, time\n"
    "n = int(os.environ['LOOPVISOR_ITERATION'])\n"
    "with open('../agent.pgid', 'a') as fh:  # outside the workspace: not a change\n"
    "    fh.write(f'{os.getpgid(0)}\\n')\n"
    "print(f'working on {n}', flush=True)\n"
    "while n >= 2 and not os.path.exists('../release'):\n"
    "    time.sleep(0.01)\n"
    "print('DONE' if n >= 5 else 'not yet', flush=True)\n"
)
"""Iteration 1 runs through; from iteration 2 on, each waits for the test to create
`release` beside the workspace; DONE in iteration 5. A run of it cannot end before the
test lets it, however slow the machine (a sim run's length was a guess that two CLI
launches under load outlasted)."""


def gated_config(h: Harness) -> None:
    (h.tmp_path / "s").mkdir()
    write_config(
        h.tmp_path,
        supervisor_table(max_concurrent=1),
        command_agent("gated", GATED_AGENT),
        loop(
            "s", "gated", workspace="s", done_marker="DONE", max_iterations=6, on_stuck="continue"
        ),
    )


def release_gated(h: Harness) -> None:
    """Let the gated agents go on, and kill at teardown any the test leaves waiting."""
    h.groups.update(int(pgid) for pgid in lines_of(h.tmp_path / "agent.pgid"))
    (h.tmp_path / "release").touch()


def test_a_second_supervisor_on_a_live_state_dir_is_refused(harness: Harness) -> None:
    h = harness
    gated_config(h)
    live = h.start()
    live.wait_for("the first agent output", lambda e: e["type"] == "output")
    message = f"another loopvisor (pid {live.pid}) is using {h.state}"
    for extra in ((), ("--resume",)):
        r = run_cli("run", h.config, "--json", "--state-dir", h.state, *extra, cwd=h.tmp_path)
        assert (r.returncode, r.stdout) == (3, ""), r.stderr
        assert message in r.stderr
        assert "Traceback" not in r.stderr
    assert live.proc.poll() is None
    assert h.status()["live"] is True  # readers still work beside it
    live.kill9()
    release_gated(h)
    # The kernel dropped the lock with the process: the state dir is free again.
    _, summary = h.resume_to_end()
    assert summary["exit_code"] == 0
    assert_contiguous(h.history("s"), "s")
    assert attempts(h.history("s"))[-1] == (5, "succeeded")


def _corrupt_tables(path: Path) -> None:
    """Overwrite every page but the first (file header and schema) with noise."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # fold the WAL in first
    size = path.stat().st_size
    assert size >= 4 * page_size
    with path.open("r+b") as fh:
        fh.seek(page_size)
        fh.write(random.Random(5).randbytes(size - page_size))


def test_a_corrupt_journal_is_a_clear_error_with_exit_code_3(harness: Harness) -> None:
    h = harness
    gated_config(h)
    first = h.start()
    first.wait_for(
        "iteration 2", lambda e: e["type"] == "iteration_started" and e["iteration"] == 2
    )
    first.kill9()
    release_gated(h)  # its iteration 2 ends: nothing resumes it
    path = h.state / JOURNAL_NAME
    _corrupt_tables(path)
    commands = [
        ("run", h.config, "--json", "--resume"),
        ("history", "s", "--json"),
        ("status", "--json"),
    ]
    for args in commands:
        r = run_cli(*args, "--state-dir", h.state, cwd=h.tmp_path)
        assert r.returncode == 3, (args, r.stderr)
        assert r.stdout == ""
        assert "Traceback" not in r.stderr, r.stderr
        assert f"{path}" in r.stderr, r.stderr
        assert "corrupt" in r.stderr, r.stderr
    # Not a journal at all (e.g. overwritten), for a fresh run as for a resume.
    path.write_bytes(random.Random(6).randbytes(16384))
    for extra in ((), ("--resume",)):
        r = run_cli("run", h.config, "--json", "--state-dir", h.state, *extra, cwd=h.tmp_path)
        assert (r.returncode, r.stdout) == (3, ""), r.stderr
        assert "is not a loopvisor journal or is corrupt" in r.stderr
        assert "Traceback" not in r.stderr
