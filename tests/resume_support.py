"""The kill -9 matrix's machinery: a real `loopvisor run --json` child whose JSON lines
are read as they come (a reader thread) and which is SIGKILLed on cue (`Session`),
sessions on one config and state dir with nothing left running at teardown
(`Harness`), the journal read beside a live or dead writer (a read-only SQLite
connection), and the invariants every resume case checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import PY, cli_env, run_cli

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


def reserve_rows(state: Path, loop: str, iteration: int) -> list[Event]:
    return [
        r for r in ledger(state, loop) if r["kind"] == "reserve" and r["iteration"] == iteration
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
