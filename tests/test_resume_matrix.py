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
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil
import pytest
from fake_anthropic import FakeAnthropic, hang, input_tokens_for, text
from helpers import (
    PY,
    alive,
    cli_env,
    command_agent,
    loop,
    run_cli,
    sim_agent,
    supervisor_table,
    table,
    wait_gone,
    write_config,
)

from supervisor.journal.reader import JournalReader
from supervisor.journal.schema import JOURNAL_NAME

Event = dict[str, Any]

SEEN_NOTE = "crash: usage seen charged once; the unseen rest charged at the reservation"
RESERVATION_NOTE = "crash: usage never seen; charged at the reservation"


# -- the supervisor as a child process ---------------------------------------------
class Session:
    """One `loopvisor run --json` child: its JSON lines as they come, kill -9 on cue."""

    def __init__(
        self, config: Path, state: Path, *, resume: bool = False, env: Mapping[str, str] = {}
    ) -> None:
        argv = [PY, "-m", "supervisor", "run", str(config), "--json", "--state-dir", str(state)]
        if resume:
            argv.append("--resume")
        self.stderr_path = config.parent / f"stderr-{uuid.uuid4().hex[:8]}.txt"
        with self.stderr_path.open("w") as err:
            self.proc = subprocess.Popen(
                argv,
                cwd=config.parent,
                env=cli_env(**env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                start_new_session=True,
            )
        self.events: list[Event] = []
        self.unparsed: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, name="session-stdout", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError:
                self.unparsed.append(line)
                continue
            with self._cond:
                self.events.append(data)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def _why(self, what: str) -> str:
        return f"{what} (exit {self.proc.poll()}); stderr:\n{self.stderr()[-2000:]}"

    def wait_for(self, what: str, pred: Callable[[Event], bool], timeout: float = 30.0) -> Event:
        """The first event (ever) that matches; fails if the child ends or time runs out.

        Timeouts are generous: the child imports the SDK, seconds on a loaded machine.
        """
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for event in self.events[seen:]:
                    if pred(event):
                        return event
                seen = len(self.events)
                if self._eof:
                    pytest.fail(self._why(f"the supervisor ended before {what}"))
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(self._why(f"timed out waiting for {what}"))
                self._cond.wait(left)

    def wait_count(self, count: int, timeout: float = 30.0) -> bool:
        """Wait until `count` lines have come: True, or False if the child ended first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.events) < count:
                if self._eof:
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(self._why(f"timed out waiting for {count} lines"))
                self._cond.wait(left)
        return True

    def until(self, what: str, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        """Poll `predicate` (journal state, files) every 2 ms while the child runs."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                pytest.fail(self._why(f"the supervisor ended before {what}"))
            if time.monotonic() > deadline:
                pytest.fail(self._why(f"timed out waiting for {what}"))
            time.sleep(0.002)

    def kill9(self) -> None:
        """SIGKILL the supervisor process only (its agents and checks are on their own)."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        assert self.proc.returncode == -signal.SIGKILL, self._why("it ended before the kill")

    def finish(self, timeout: float = 30.0) -> Event:
        """Wait for the end; return the summary (the last line)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(self._why(f"the supervisor did not finish within {timeout}s"))
        self._reader.join(timeout=10)
        assert not self.unparsed, self.unparsed[:3]
        assert self.events, self._why("no output")
        summary = self.events[-1]
        assert summary["type"] == "summary", self._why(f"last line: {summary}")
        assert summary["exit_code"] == self.proc.returncode
        return summary

    def of(self, kind: str, loop: str | None = None) -> list[Event]:
        with self._cond:
            return [
                e
                for e in self.events
                if e["type"] == kind and (loop is None or e.get("loop") == loop)
            ]

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Harness:
    """Sessions on one config and state dir; at teardown nothing they started survives."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.state = tmp_path / "state"
        self.config = tmp_path / "loops.toml"
        self.sessions: list[Session] = []
        self.groups: set[int] = set()
        """Process groups of agents/checks (from their pid files), killed at teardown."""

    def start(self, *, resume: bool = False, env: Mapping[str, str] = {}) -> Session:
        session = Session(self.config, self.state, resume=resume, env=env)
        self.sessions.append(session)
        return session

    def resume_to_end(
        self, *, env: Mapping[str, str] = {}, timeout: float = 40.0
    ) -> tuple[Session, Event]:
        session = self.start(resume=True, env=env)
        return session, session.finish(timeout)

    def history(self, loop: str) -> list[Event]:
        r = run_cli("history", loop, "--json", "--state-dir", self.state, cwd=self.tmp_path)
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        assert data["loop"] == loop
        items: list[Event] = data["iterations"]
        return items

    def status(self) -> Event:
        r = run_cli("status", "--json", "--state-dir", self.state, cwd=self.tmp_path)
        assert r.returncode == 0, r.stderr
        status: Event = json.loads(r.stdout)
        return status

    def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        return query(self.state, sql, *args)

    def close(self) -> None:
        for session in self.sessions:
            session.close()
        for pgid in self.groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()


# -- reading the journal beside a live (or dead) writer ------------------------------
def query(state: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Rows from a read-only connection; [] while the file or its tables do not exist."""
    path = state / JOURNAL_NAME
    if not path.exists():
        return []
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def journal_events(state: Path, kind: str, loop: str | None = None) -> list[Event]:
    rows = query(state, "SELECT json FROM events WHERE type = ? ORDER BY seq", kind)
    events = [json.loads(r[0]) for r in rows]
    return [e for e in events if loop is None or e.get("loop") == loop]


def ledger(state: Path, loop: str | None = None) -> list[Event]:
    rows = query(
        state,
        "SELECT loop, iteration, kind, tokens, usd, settles, note FROM ledger ORDER BY id",
    )
    keys = ("loop", "iteration", "kind", "tokens", "usd", "settles", "note")
    out = [dict(zip(keys, r, strict=True)) for r in rows]
    return [r for r in out if loop is None or r["loop"] == loop]


def charged(state: Path, loop: str | None = None) -> int:
    return sum(int(r["tokens"]) for r in ledger(state, loop) if r["kind"] == "charge")


def settlements(state: Path, loop: str | None = None) -> list[tuple[str, int, str]]:
    return [
        (r["kind"], int(r["tokens"]), r["note"])
        for r in ledger(state, loop)
        if r["settles"] is not None
    ]


def usage_tokens(events: list[Event], loop: str | None = None, iteration: int | None = None) -> int:
    """Tokens in `usage` events (what the agent reported, as the loop charged it)."""
    return sum(
        e["input_tokens"] + e["output_tokens"] + e["cache_creation_tokens"] + e["cache_read_tokens"]
        for e in events
        if e["type"] == "usage"
        and (loop is None or e["loop"] == loop)
        and (iteration is None or e["iteration"] == iteration)
    )


def usage_key(e: Event) -> tuple[Any, ...]:
    return (e["loop"], e["iteration"], e["ts"], e["input_tokens"], e["output_tokens"])


def loop_state(state: Path, loop: str) -> str | None:
    rows = query(state, "SELECT state FROM loops WHERE name = ?", loop)
    return str(rows[-1][0]) if rows else None


# -- invariants ---------------------------------------------------------------------
def assert_contiguous(items: list[Event], loop: str) -> None:
    """1, 2, ... with an `interrupted` (or retried `error`) attempt repeated once more."""
    expected = 1
    for item in items:
        assert item["iteration"] == expected, (
            f"{loop}: {[(i['iteration'], i['outcome']) for i in items]}"
        )
        assert item["outcome"] is not None
        again = item["outcome"] in ("interrupted", "error")
        expected = item["iteration"] if again else item["iteration"] + 1


def attempts(items: list[Event]) -> list[tuple[int, str]]:
    return [(i["iteration"], i["outcome"]) for i in items]


def result(summary: Event, name: str) -> Event:
    found: Event = next(r for r in summary["loops"] if r["name"] == name)
    return found


def pgid_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    found = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
    return found


# A check that logs which iteration ran it (and its shell's pid, = its process group),
# then passes once the agent wrote result.txt. CHECK_SLEEP (from the supervisor's
# environment, passed by `pass_env`) makes it slow from iteration 2 on.
RESULT_CHECK = {
    "name": "result",
    "run": 'echo "$$" >> check.pids; echo "$LOOPVISOR_ITERATION" >> checks.log;'
    ' [ "$LOOPVISOR_ITERATION" = 1 ] || sleep "${CHECK_SLEEP:-0}"; test -f result.txt',
    "pass_env": ["CHECK_SLEEP"],
}


def lines_of(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


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
def slow_sim_config(h: Harness) -> None:
    (h.tmp_path / "s").mkdir()
    write_config(
        h.tmp_path,
        supervisor_table(max_concurrent=1),
        sim_agent("slow", rate=100, reply_tokens=50, converge_after=5, done_text="DONE"),
        loop("s", "slow", workspace="s", done_marker="DONE", max_iterations=6),
    )


GATED = (
    "import os, sys, time\n"
    "print('working on iteration', sys.argv[1], flush=True)\n"
    "while not os.path.exists('go'):\n"  # held until the test lets it finish
    "    time.sleep(0.01)\n"
    "print('DONE' if int(sys.argv[1]) >= 5 else 'not yet')\n"
)
"""A command agent that says it started, then waits for a `go` file in its workspace:
the run it belongs to is still live, however loaded the machine, until the test says."""


def test_a_second_supervisor_on_a_live_state_dir_is_refused(harness: Harness) -> None:
    h = harness
    (h.tmp_path / "s").mkdir()
    write_config(
        h.tmp_path,
        supervisor_table(max_concurrent=1),
        command_agent("gated", GATED, "$iteration"),
        loop(
            "s", "gated", workspace="s", done_marker="DONE", max_iterations=6, on_stuck="continue"
        ),
    )
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
    (h.tmp_path / "s" / "go").touch()
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
    slow_sim_config(h)
    first = h.start()
    first.wait_for(
        "iteration 2", lambda e: e["type"] == "iteration_started" and e["iteration"] == 2
    )
    first.kill9()
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
