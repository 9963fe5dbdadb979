"""A full disk under the state dir is survived (issue 10, item 10).

A real tmpfs of 16 MiB is mounted (root only; skipped with the reason
otherwise) and filled with a file: the journal writer meets a real ENOSPC. The
supervisor must say "no space left on DIR", start no agent turn while nothing can
be journalled, continue when space returns, and exit 5 after the grace period;
never a traceback. The mount is removed in a finally.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import PY, cli_env, load, loop, run_cli, sim_agent, table, write_config

from supervisor import events as ev
from supervisor.api import ControlError
from supervisor.diskfull import RETRY_MAX_S, DiskFull, SpaceWatch, is_disk_full
from supervisor.journal.writer import Journal
from supervisor.runtime import Supervisor

EXIT_DISK_FULL = 5


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"mount is not permitted here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path) -> Path:
    """Take every free block of `mnt`; returns the file that holds them."""
    filler = mnt / "filler"
    with open(filler, "wb", buffering=0) as out:
        for size in (65536, 512):  # big blocks, then the last small ones
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * size)
    assert os.statvfs(mnt).f_bavail == 0
    return filler


def config(tmp_path: Path, grace: str | None = None, iterations: int = 400) -> Path:
    """One sim loop of short, talkative iterations (~0.1 s each)."""
    return write_config(
        tmp_path,
        table("supervisor", max_concurrent=2, disk_full_grace=grace),
        sim_agent("talk", rate=3000, reply_tokens=300),
        loop("one", "talk", max_iterations=iterations, done_marker="NEVER", on_stuck="continue"),
    )


class Run:
    """`loopvisor run --json` (or serve) as a subprocess; its stdout lines as they come."""

    def __init__(self, *args: str | Path, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [PY, "-m", "supervisor", *map(str, args)],
            cwd=cwd,
            env=cli_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.err.extend(self.proc.stderr)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, what: str, pred: Any, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            with contextlib.suppress(ValueError):
                event: dict[str, Any] = json.loads(line)
                self.seen.append(event)
                if pred(event):
                    return event
        raise AssertionError(f"no {what} within {timeout}s; exit {self.proc.poll()}")

    def finish(self, timeout: float = 20.0) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        while (line := self.lines.get(timeout=5)) is not None:
            with contextlib.suppress(ValueError):
                self.seen.append(json.loads(line))
        self._err_reader.join(timeout=5)
        return code, "".join(self.err)

    def kill(self) -> None:
        """Kill it if it still runs; close its pipes once the readers are done."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        for reader in (self._reader, self._err_reader):
            reader.join(timeout=5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def is_full_notice(e: dict[str, Any]) -> bool:
    return e["type"] == "notice" and "no space left on" in e.get("message", "")


def finished_iteration(e: dict[str, Any], at_least: int = 1) -> bool:
    return e["type"] == "iteration_finished" and bool(e["iteration"] >= at_least)


# -- full before the start -----------------------------------------------------------
@pytest.mark.parametrize("how", ["run", "resume", "serve"])
def test_a_full_disk_at_the_start_says_so_and_exits_5(
    tmp_path: Path, tiny_fs: Path, how: str
) -> None:
    state = tiny_fs / "state"
    cfg = config(tmp_path, iterations=2)
    if how == "resume":
        r = run_cli("run", cfg, "--state-dir", state, "--quiet", cwd=tmp_path)
        assert r.returncode == 1, r.stderr
    else:
        state.mkdir(mode=0o700)
    fill(tiny_fs)
    args = {
        "run": ["run", "--quiet"],
        "resume": ["run", "--quiet", "--resume"],
        "serve": ["serve"],  # in the foreground: it would run until shut down
    }[how]
    r = run_cli(args[0], cfg, "--state-dir", state, *args[1:], cwd=tmp_path)
    assert r.returncode == EXIT_DISK_FULL, (r.returncode, r.stdout, r.stderr)
    assert f"no space left on {state}" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr


# -- full in the middle of a run -----------------------------------------------------
def test_run_waits_while_the_disk_is_full_and_continues_when_space_returns(
    tmp_path: Path, tiny_fs: Path
) -> None:
    state = tiny_fs / "state"
    run = Run("run", config(tmp_path, iterations=6), "--json", "--state-dir", state, cwd=tmp_path)
    try:
        run.wait_for("a first iteration", finished_iteration)
        filler = fill(tiny_fs)
        run.wait_for("the disk-full notice", is_full_notice)
        full_at = len(run.seen)
        run.wait_for(
            "the loop waiting for space",
            lambda e: e["type"] == "state" and e["state"] == "waiting" and "space" in e["reason"],
        )
        filler.unlink()
        run.wait_for("space back", lambda e: e["type"] == "notice" and "is back" in e["message"])
        space_at = len(run.seen)
        code, err = run.finish()
    finally:
        run.kill()
    assert "Traceback" not in err
    assert code == 1, err  # max_iterations reached: the run went on to its end
    while_full = [e for e in run.seen[full_at:space_at] if e["type"] == "iteration_started"]
    assert while_full == [], "no turn starts while nothing can be journalled"
    r = run_cli("history", "one", "--json", "--state-dir", state, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    done = [i for i in json.loads(r.stdout)["iterations"] if i["outcome"] != "interrupted"]
    assert [i["iteration"] for i in done] == list(range(1, 7)), "nothing lost"


def test_run_exits_5_when_the_disk_stays_full_past_the_grace_period(
    tmp_path: Path, tiny_fs: Path
) -> None:
    state = tiny_fs / "state"
    cfg = config(tmp_path, grace="1s", iterations=5)
    run = Run("run", cfg, "--json", "--state-dir", state, cwd=tmp_path)
    try:
        run.wait_for("a first iteration", finished_iteration)
        filler = fill(tiny_fs)
        run.wait_for("the disk-full notice", is_full_notice)
        code, err = run.finish()
    finally:
        run.kill()
    assert code == EXIT_DISK_FULL, err
    assert f"no space left on {state}" in err
    assert "Traceback" not in err
    assert run.seen[-1]["type"] == "summary", run.seen[-3:]
    assert run.seen[-1]["exit_code"] == EXIT_DISK_FULL
    # Space freed: --resume continues the run to its end, no iteration lost.
    filler.unlink()
    r = run_cli("run", cfg, "--state-dir", state, "--resume", "--quiet", cwd=tmp_path)
    assert r.returncode == 1, r.stderr  # max_iterations reached
    r = run_cli("history", "one", "--json", "--state-dir", state, cwd=tmp_path)
    done = [i for i in json.loads(r.stdout)["iterations"] if i["outcome"] != "interrupted"]
    assert [i["iteration"] for i in done] == list(range(1, 6))


def test_serve_exits_5_when_the_disk_stays_full_past_the_grace_period(
    tmp_path: Path, tiny_fs: Path
) -> None:
    state = tiny_fs / "state"
    run = Run("serve", config(tmp_path, grace="1s"), "--state-dir", state, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while not (state / "control.sock").exists() and time.monotonic() < deadline:
            assert run.proc.poll() is None
            time.sleep(0.05)
        fill(tiny_fs)
        code, err = run.finish(timeout=30)
    finally:
        run.kill()
    assert code == EXIT_DISK_FULL, err
    assert f"no space left on {state}" in err
    assert "Traceback" not in err
    assert "cannot rollback" not in err


# -- without root: SQLite's own "disk is full" and the retry policy ---------------------
def test_a_full_journal_is_reported_as_such_and_keeps_its_batch(tmp_path: Path) -> None:
    """SQLITE_FULL (here from max_page_count) is DiskFull, not a masked rollback error."""
    journal = Journal.open(tmp_path / "state")
    try:
        journal.start_run("r1", tmp_path / "loops.toml", "", loops=())
        journal.record(ev.RunStarted(run_id="r1", config="loops.toml", loops=("a",)))
        journal.flush_now()
        pages = journal._conn.execute("PRAGMA page_count").fetchone()[0]
        journal._conn.execute(f"PRAGMA max_page_count={pages}")
        journal._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for n in range(200):
            journal.record(ev.AgentOutput(loop="a", iteration=1, text="x" * 4000 + str(n)))
            journal.record(ev.Notice(message=f"n{n}"))
        with pytest.raises(DiskFull, match=f"no space left on {tmp_path / 'state'}"):
            journal.flush_now()
        assert journal.statistics().pending_events == 400  # kept for the retry
        journal._conn.execute("PRAGMA max_page_count=1000000")
        journal.flush_now()
        assert journal.statistics().pending_events == 0
    finally:
        journal.close()


def test_space_watch_backs_off_then_gives_up_after_the_grace_period() -> None:
    calls: list[tuple[str, str]] = []
    watch = SpaceWatch(Path("/state"), grace_s=3600)
    watch.on_full = lambda m: calls.append(("full", m))
    watch.on_space = lambda m: calls.append(("space", m))
    watch.on_give_up = lambda m: calls.append(("give_up", m))
    assert watch.due()
    assert watch.retry_in(0.05) == 0.05
    for _ in range(10):
        watch.failed()
    assert [c[0] for c in calls] == ["full"]
    assert "no space left on /state" in calls[0][1]
    assert not watch.due()
    assert 0 < watch.retry_in(0.05) <= RETRY_MAX_S
    watch.written()
    watch.written()
    assert [c[0] for c in calls] == ["full", "space"]
    assert watch.due()
    watch.grace_s = 0.0
    watch.failed()
    watch.failed()
    assert [c[0] for c in calls] == ["full", "space", "full", "give_up"]


def test_enospc_and_sqlite_full_are_recognised_and_others_are_not() -> None:
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError("no"))


def test_serve_waits_while_the_disk_is_full_and_goes_on_when_space_returns(
    tmp_path: Path, tiny_fs: Path
) -> None:
    state = tiny_fs / "state"
    run = Run("serve", config(tmp_path), "--state-dir", state, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while not (state / "control.sock").exists() and time.monotonic() < deadline:
            assert run.proc.poll() is None
            time.sleep(0.05)
        filler = fill(tiny_fs)
        wait_line(run, f"no space left on {state}")
        filler.unlink()
        wait_line(run, f"space is back on {state}")
        r = run_cli("ctl", "status", "--json", "--state-dir", state, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert run_cli("ctl", "shutdown", "--state-dir", state, cwd=tmp_path).returncode == 0
        code, err = run.finish(timeout=30)
    finally:
        run.kill()
    assert code == 0, err
    assert "Traceback" not in err


def wait_line(run: Run, text: str, timeout: float = 20.0) -> None:
    """Wait for a plain (not JSON) stdout line of `serve` that contains `text`."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        line = run.lines.get(timeout=left)
        assert line is not None, f"serve ended before printing {text!r}"
        if text in line:
            return
    raise AssertionError(f"serve printed no {text!r} within {timeout}s")


def test_serve_detach_on_a_full_disk_says_so_and_exits_5(tmp_path: Path, tiny_fs: Path) -> None:
    state = tiny_fs / "state"
    state.mkdir(mode=0o700)
    fill(tiny_fs)
    r = run_cli("serve", config(tmp_path), "--state-dir", state, "--detach", cwd=tmp_path)
    assert r.returncode == EXIT_DISK_FULL, (r.returncode, r.stdout, r.stderr)
    assert f"no space left on {state}" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr


def test_the_turn_in_flight_when_the_disk_fills_is_cancelled(tmp_path: Path, tiny_fs: Path) -> None:
    """Nothing spends while nothing can be journalled: a 10 s turn stops at once."""
    cfg = write_config(
        tmp_path,
        table("supervisor", max_concurrent=2),
        sim_agent("long", rate=500, reply_tokens=5000),
        loop("one", "long", max_iterations=2, done_marker="NEVER", on_stuck="continue"),
    )
    run = Run("run", cfg, "--json", "--state-dir", tiny_fs / "state", cwd=tmp_path)
    try:
        run.wait_for("the turn streaming", lambda e: e["type"] == "output")
        fill(tiny_fs)
        filled = time.monotonic()
        end = run.wait_for("the turn's end", lambda e: e["type"] == "iteration_finished")
        took = time.monotonic() - filled
    finally:
        run.kill()
    assert end["outcome"] == "interrupted", end
    assert "no space left on" in end["reason"]
    assert took < 5, f"the turn went on for {took:.1f}s after the disk filled"


@pytest.mark.anyio
async def test_no_operator_chat_spends_while_the_disk_is_full(tmp_path: Path) -> None:
    """Step-in chat is a turn too: refused while the journal cannot be written."""
    sup = Supervisor(
        load(tmp_path, table("supervisor"), sim_agent("s"), loop("one", "s", done_marker="X"))
    )
    sup.journal_full("no space left on /state: the journal cannot be written")
    with pytest.raises(ControlError, match="no space left on /state"):
        await sup.chat("one", "hello")
    sup.journal_writable("space is back on /state")
    with pytest.raises(ControlError, match="step in first"):
        await sup.chat("one", "hello")
