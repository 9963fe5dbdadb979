"""The kill -9 matrix: a real `loopvisor run --json` child SIGKILLed at a precise
moment (mid agent stream, mid check, mid journal write), then `run --resume` to the
end in a second child.

The moment is found from the child's own JSON lines as they arrive (a reader thread)
and, where the assertion depends on it, from what the journal has committed (a
read-only SQLite connection beside the live writer): never a blind sleep.

After the resume every case checks, from `loopvisor history LOOP --json`, the
journal and the final summary: iterations are contiguous per loop (the killed one
appears once as `interrupted` and the same number runs again), no loop started
over, a loop that had finished is not run again, the summary counts iterations
across the crash, the ledger equals what the agents reported (for the API agent:
the fake server's own bill, with the crash settled as "usage seen" or "charged at
the reservation"), and nothing the killed supervisor started is left running.

Under random kills (mid journal write) the ledger is exactly the journalled usage
plus the crash charges; it differs from what the agents printed only by the usage
of the last uncommitted batch (the journal writes every 50 ms), which the test
measures and prints (`pytest -s`; LOOPVISOR_KILL_SEED picks other moments).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_anthropic import FakeAnthropic, hang, input_tokens_for, text
from helpers import (
    alive,
    command_agent,
    loop,
    run_cli,
    sim_agent,
    supervisor_table,
    table,
    wait_gone,
    write_config,
)
from resume_support import (
    RESERVATION_NOTE,
    RESULT_CHECK,
    SEEN_NOTE,
    Event,
    Harness,
    Session,
    assert_contiguous,
    attempts,
    charged,
    journal_events,
    ledger,
    lines_of,
    loop_state,
    pgid_alive,
    query,
    result,
    settlements,
    usage_key,
    usage_tokens,
)

from supervisor.journal.reader import JournalReader
from supervisor.journal.schema import JOURNAL_NAME


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()


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


# -- 1b. mid-iteration with the Messages API: the fake server's own bill ---------------
API_LONG = " ".join(f"word{i}" for i in range(80))


def api_config(h: Harness) -> None:
    for name in ("api", "done"):
        (h.tmp_path / name).mkdir()
    write_config(
        h.tmp_path,
        supervisor_table(max_concurrent=2, tokens=200_000),
        # No base_url: the SDK takes ANTHROPIC_BASE_URL from the child's environment.
        table(
            "agents.api", kind="anthropic", model="claude-haiku-4-5", max_tokens=300, timeout="20s"
        ),
        sim_agent("quick", converge_after=1, files={"result.txt": "ok"}),
        loop(
            "api",
            "api",
            workspace="api",
            context="continue",
            done_marker="DONE",
            max_iterations=5,
            prompt="Finish the task, then say DONE. Iteration $iteration.",
        ),
        loop("done", "quick", workspace="done", checks=[RESULT_CHECK], max_iterations=3),
    )


def api_env(server: FakeAnthropic) -> dict[str, str]:
    return {"ANTHROPIC_BASE_URL": server.base_url, "ANTHROPIC_API_KEY": "dummy"}


def api_tokens(state: Path, loop: str = "api") -> tuple[int, int]:
    """(input incl. cache, output) tokens of the usage events the journal holds."""
    events = journal_events(state, "usage", loop)
    inputs = sum(
        e["input_tokens"] + e["cache_creation_tokens"] + e["cache_read_tokens"] for e in events
    )
    return inputs, sum(e["output_tokens"] for e in events)


def reserve_rows(state: Path, loop: str, iteration: int) -> list[Event]:
    return [
        r for r in ledger(state, loop) if r["kind"] == "reserve" and r["iteration"] == iteration
    ]


def assert_api_resumed(h: Harness, done_first: bool, second: Session, summary: Event) -> None:
    """What every API case shares after the resume. `done_first`: the sim loop `done`
    had finished (in the journal) when the supervisor was killed."""
    assert summary["exit_code"] == 0
    api = h.history("api")
    assert_contiguous(api, "api")
    assert attempts(api) == [(1, "continue"), (2, "interrupted"), (2, "continue"), (3, "succeeded")]
    done = h.history("done")
    assert_contiguous(done, "done")
    if done_first:
        assert attempts(done) == [(1, "succeeded")]
        assert second.of("iteration_started", "done") == []
    else:  # only the write-ahead case kills that early
        assert attempts(done)[-1] == (1, "succeeded")
    assert [e["iteration"] for e in second.of("iteration_started", "api")] == [2, 3]
    assert result(summary, "api")["iterations"] == 3
    assert result(summary, "api")["tokens"] == charged(h.state, "api")
    assert summary["tokens"] == charged(h.state)


def test_api_killed_mid_stream_charges_exactly_the_servers_bill(harness: Harness) -> None:
    h = harness
    api_config(h)
    script = [
        text("First look at the problem."),
        text(API_LONG, delay=0.04),
        text("Second try, still working."),
        text("All good now. DONE"),
    ]
    with FakeAnthropic(script) as server:
        first = h.start(env=api_env(server))
        first.wait_for(
            "streamed text of api iteration 2",
            lambda e: (
                e["type"] == "output"
                and e["loop"] == "api"
                and e["iteration"] == 2
                and "word5" in e["text"]
            ),
        )
        # message_start's usage (input + 1 output token) was reported and is committed.
        first.until(
            "the journal to commit iteration 2's usage",
            lambda: (
                any(e["iteration"] == 2 for e in journal_events(h.state, "usage", "api"))
                and len(journal_events(h.state, "usage")) == len(first.of("usage"))
                and loop_state(h.state, "done") == "succeeded"
            ),
        )
        first.kill9()
        assert server.totals.messages == 2
        assert attempts(h.history("api")) == [(1, "continue"), (2, "interrupted")]

        second, summary = h.resume_to_end(env=api_env(server))
        bill = server.totals
        requests = server.message_requests()

    assert_api_resumed(h, True, second, summary)
    # Usage seen before the crash is charged once, the unseen rest of the reservation on
    # top (a real API bills the output streamed before the kill): never below the bill.
    held = int(reserve_rows(h.state, "api", 2)[-1]["tokens"])
    seen = usage_tokens(first.events, "api", 2)
    assert settlements(h.state, "api") == [
        ("charge", held - seen, SEEN_NOTE),
        ("release", 0, SEEN_NOTE),
    ]
    assert any("charged at the reservation" in e["message"] for e in second.of("notice"))
    assert charged(h.state, "api") == bill.tokens + held - seen == result(summary, "api")["tokens"]
    assert charged(h.state, "api") > bill.tokens
    interrupted = h.history("api")[1]
    assert interrupted["tokens"] == held > seen > 0
    # The conversation continued from iteration 1 (the cut reply is not in it), and the
    # re-run sent iteration 2 exactly as the killed attempt had.
    assert len(requests) == 4
    assert requests[2].body["messages"] == requests[1].body["messages"]
    assert requests[2].body["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "First look at the problem."}],
    }
    # One conversation across the crash. (The interrupted attempt's row has no session
    # id: it is only known from the turn's end; resume takes it from the journal events.)
    rows = h.query("SELECT outcome, session_id FROM iterations WHERE loop = 'api' ORDER BY id")
    assert len({s for outcome, s in rows if outcome != "interrupted"}) == 1
    assert rows[0][1] is not None


def test_api_killed_before_any_usage_is_charged_at_the_reservation(harness: Harness) -> None:
    h = harness
    api_config(h)
    script = [
        text("First look at the problem."),
        hang(30.0),
        text("Second try, still working."),
        text("All good now. DONE"),
    ]
    with FakeAnthropic(script) as server:
        first = h.start(env=api_env(server))
        # The request is at the server (which says nothing and bills nothing) and its
        # reservation is in the journal.
        first.until(
            "iteration 2's request to reach the server",
            lambda: (
                len(server.message_requests()) == 2
                and bool(reserve_rows(h.state, "api", 2))
                and loop_state(h.state, "done") == "succeeded"
            ),
        )
        first.kill9()
        (reservation,) = reserve_rows(h.state, "api", 2)
        bill_before = server.totals.tokens
        second, summary = h.resume_to_end(env=api_env(server))
        bill = server.totals

    assert_api_resumed(h, True, second, summary)
    held = int(reservation["tokens"])
    assert held > 300  # the counted input plus max_tokens
    assert settlements(h.state, "api") == [
        ("charge", held, RESERVATION_NOTE),
        ("release", 0, RESERVATION_NOTE),
    ]
    notes = [e["message"] for e in second.of("notice")]
    assert f"api: {held:,} tokens" in " ".join(notes)
    assert any("charged at the reservation" in m for m in notes)
    assert h.history("api")[1]["tokens"] == held
    assert bill.tokens > bill_before  # the resumed iterations were billed too
    assert charged(h.state, "api") == bill.tokens + held == result(summary, "api")["tokens"]


def test_api_killed_the_instant_the_server_bills_is_never_undercharged(
    harness: Harness,
) -> None:
    """Write-ahead: the reservation must be in the journal before the request leaves.

    The kill lands as soon as the server has billed message_start (and then hangs), not
    waiting for the journal: whatever the journal then holds must cover the bill, as
    "usage seen" (exact) or "charged at the reservation" (more), never less.
    """
    h = harness
    api_config(h)
    script = [
        text("First look at the problem."),
        hang(30.0, after_start=True),
        text("Second try, still working."),
        text("All good now. DONE"),
    ]
    with FakeAnthropic(script) as server:
        first = h.start(env=api_env(server))
        first.until("iteration 2's message_start to be billed", lambda: server.totals.messages == 2)
        first.kill9()
        done_first = loop_state(h.state, "done") == "succeeded"
        bill_at_kill = server.totals.tokens
        (started,) = [r for r in server.message_requests() if r.reply == "hang"]
        second, summary = h.resume_to_end(env=api_env(server))
        bill = server.totals

    assert_api_resumed(h, done_first, second, summary)
    assert bill_at_kill > 0
    settled = settlements(h.state, "api")
    assert settled, f"no row covers iteration 2's request: {ledger(h.state, 'api')}"
    held = int(reserve_rows(h.state, "api", 2)[0]["tokens"])
    billed_start = input_tokens_for(started.body)  # message_start (of no text: 0 output)
    if settled[0][2] == SEEN_NOTE:  # the journal had message_start's usage
        assert settled == [("charge", held - billed_start, SEEN_NOTE), ("release", 0, SEEN_NOTE)]
        assert charged(h.state, "api") == bill.tokens - billed_start + held
    else:  # only the reservation: charged whole, more than was billed
        assert settled == [("charge", held, RESERVATION_NOTE), ("release", 0, RESERVATION_NOTE)]
        assert charged(h.state, "api") == bill.tokens - billed_start + held > bill.tokens
    print("write-ahead case:", settled[0][2])


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


# -- 3. mid-journal-write: random kills under heavy output --------------------------------
def wal_state(state: Path) -> tuple[int, int]:
    try:
        st = (state / f"{JOURNAL_NAME}-wal").stat()
    except FileNotFoundError:
        return (0, 0)
    return (st.st_size, st.st_mtime_ns)


def wal_uncommitted_frames(state: Path) -> int:
    """Frames of the current WAL generation after its last commit frame: a transaction
    the writer was in the middle of when it died (SQLite ignores them on recovery)."""
    path = state / f"{JOURNAL_NAME}-wal"
    if not path.exists():
        return 0
    data = path.read_bytes()
    if len(data) < 32:
        return 0
    page_size = int.from_bytes(data[8:12], "big")
    salts = data[16:24]
    offset, frames, last_commit = 32, 0, 0
    while offset + 24 + page_size <= len(data) and data[offset + 8 : offset + 16] == salts:
        frames += 1
        if int.from_bytes(data[offset + 4 : offset + 8], "big"):
            last_commit = frames
        offset += 24 + page_size
    return frames - last_commit


def assert_journal_consistent(state: Path) -> None:
    """Whole batches only: SQLite's own check, and each derived table in step with the
    events it is derived from (they are written in the same transaction)."""
    assert query(state, "PRAGMA integrity_check") == [("ok",)]
    started = query(state, "SELECT count(*) FROM events WHERE type = 'iteration_started'")
    assert started == query(state, "SELECT count(*) FROM iterations")
    booked = query(
        state, "SELECT count(*) FROM events WHERE type IN ('usage', 'reserved', 'released')"
    )
    assert booked == query(state, "SELECT count(*) FROM ledger WHERE settles IS NULL")
    for name, state_now in query(state, "SELECT name, state FROM loops"):
        rows = query(
            state,
            "SELECT json FROM events WHERE type = 'state' AND loop = ? ORDER BY seq DESC LIMIT 1",
            name,
        )
        if rows:
            assert json.loads(rows[0][0])["state"] == state_now, name


def test_random_kills_under_heavy_output_lose_no_batch_and_charge_nothing_twice(
    harness: Harness,
) -> None:
    h = harness
    seed = int(os.environ.get("LOOPVISOR_KILL_SEED", "20261127"))
    rng = random.Random(seed)
    names = [f"l{i}" for i in range(10)]
    converge = {name: 2 + i % 5 for i, name in enumerate(names)}
    for name in names:
        (h.tmp_path / name).mkdir()
    write_config(
        h.tmp_path,
        supervisor_table(max_concurrent=10, tokens=5_000_000),
        *(
            sim_agent(f"a{name}", rate=4000, reply_tokens=300, converge_after=converge[name],
                      done_text="DONE", seed=i)
            for i, name in enumerate(names)
        ),
        *(
            loop(name, f"a{name}", workspace=name, done_marker="DONE", max_iterations=8,
                 stuck={"same_output": 0})
            for name in names
        ),
    )  # fmt: skip
    printed: list[Event] = []
    kills: list[str] = []
    finished: dict[str, int] = {}
    """Loops the journal had as finished after a kill -> their iteration rows then."""

    ended: tuple[Session, Event] | None = None
    for round_no in range(5):
        session = h.start(resume=round_no > 0)
        target = rng.randint(20, 800)
        if session.wait_count(target):
            # The precise moment: the writer has just started writing a batch.
            before, deadline = wal_state(h.state), time.monotonic() + 1.0
            while wal_state(h.state) == before and time.monotonic() < deadline:
                if session.proc.poll() is not None:
                    break
        if session.proc.poll() is not None or len(session.events) < target:
            ended = (session, session.finish())  # it ended first: a clean end
            kills.append(f"round {round_no}: ended by itself at line {len(session.events)}")
            break
        session.kill9()
        torn = wal_uncommitted_frames(h.state)
        where = f"seed {seed}, round {round_no}, after {len(session.events)} lines"
        kills.append(f"round {round_no}: line {len(session.events)}, torn frames {torn}")

        assert_journal_consistent(h.state)
        # What the journal holds of this session's usage and what was printed agree up
        # to where either stopped (the journal may be one batch behind or ahead).
        since = session.of("run_started")[0]["ts"]
        committed = [usage_key(e) for e in journal_events(h.state, "usage") if e["ts"] >= since]
        shown = [usage_key(e) for e in session.of("usage")]
        common = min(len(committed), len(shown))
        assert committed[:common] == shown[:common], where
        printed += session.of("usage")
        for name in names:
            items = history_of(h.state, name)
            if items:
                assert_contiguous(items, name)
            if name in finished:
                assert len(items) == finished[name], f"{where}: finished {name} ran again"
            elif loop_state(h.state, name) == "succeeded":
                finished[name] = len(items)

    final, summary = ended or h.resume_to_end()
    assert summary["exit_code"] == 0, kills
    for name in names:
        items = history_of(h.state, name)
        assert_contiguous(items, name)
        assert items[-1]["iteration"] == converge[name] == result(summary, name)["iterations"]
        assert items[-1]["outcome"] == "succeeded"
        assert charged(h.state, name) == result(summary, name)["tokens"]
        if name in finished:
            assert len(items) == finished[name], f"finished {name} ran again"
            assert final.of("iteration_started", name) == []
    assert h.history(names[0]) == history_of(h.state, names[0])  # the CLI says the same
    assert summary["tokens"] == charged(h.state)

    # The ledger is every usage event the journal holds (each once) plus what crashes
    # charged at the reservation; the agents' reports differ from it only by the usage
    # printed in the last moments before a kill that no batch had committed yet.
    journal_usage = journal_events(h.state, "usage")
    keys = [usage_key(e) for e in journal_usage]
    assert len(keys) == len(set(keys)), "a usage event was recorded twice"
    at_reservation = sum(t for kind, t, _ in settlements(h.state) if kind == "charge")
    for name in names:
        assert charged(h.state, name) == usage_tokens(journal_usage, name) + sum(
            t for kind, t, _ in settlements(h.state, name) if kind == "charge"
        )
    journal_keys = set(keys)
    assert {usage_key(e) for e in final.of("usage")} <= journal_keys  # a clean end loses none
    printed += final.of("usage")
    printed_keys = {usage_key(e) for e in printed}
    lost = [e for e in printed if usage_key(e) not in journal_keys]
    unprinted = [e for e in journal_usage if usage_key(e) not in printed_keys]
    reported = usage_tokens(printed)
    assert charged(h.state) == (
        reported - usage_tokens(lost) + usage_tokens(unprinted) + at_reservation
    ), kills
    print(
        f"\nkill matrix (seed {seed}): {kills}; reported {reported}, ledger"
        f" {charged(h.state)}, printed but never journalled {usage_tokens(lost)},"
        f" journalled but not yet printed {usage_tokens(unprinted)},"
        f" charged at the reservation {at_reservation}"
    )


def history_of(state: Path, name: str) -> list[Event]:
    """`history NAME --json` in-process (the same reader the CLI uses)."""
    with JournalReader(state) as reader:
        items: list[Event] = reader.history_json(name)["iterations"]
    return items
