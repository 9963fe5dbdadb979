"""Issue 11, item 9: a served run's recorded outcome is what its loops did.

Defects: a served run whose loops had all ended still said `finished: false`;
`ctl shutdown` then recorded exit code 130 (as if interrupted) and a wall time that
included the idle serving; SIGTERM to a foreground `serve` printed "exit code 130".
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

from daemon import kill_daemon, poll, serve_foreground, start_daemon
from helpers import command_agent, loop, sim_agent, supervisor_table


def _run_row(state: Path) -> tuple[float, float, int]:
    with sqlite3.connect(f"file:{state / 'journal.sqlite3'}?mode=ro", uri=True) as conn:
        started, ended, code = conn.execute("SELECT started, ended, exit_code FROM runs").fetchone()
    return float(started), float(ended), int(code)


def test_a_served_run_that_ended_reports_finished_and_records_its_own_outcome(
    tmp_path: Path,
) -> None:
    toml = "\n".join(
        [
            supervisor_table(2),
            sim_agent("quick", converge_after=2, done_text="DONE"),
            loop("q", "quick", done_marker="DONE", max_iterations=4),
        ]
    )
    d = start_daemon(tmp_path, toml)
    try:
        poll(lambda: d.loop("q")["state"] == "succeeded", timeout=20, what="q to succeed")
        status = poll(lambda: (s := d.status())["finished"] and s, timeout=5, what="finished")
        seen_finished = time.time()
        assert status["finished"] is True
        r = d.ctl("shutdown")
        assert r.returncode == 0, r.stderr
        poll(lambda: not d.socket.exists(), timeout=15, what="the server to exit")
        _, ended, code = _run_row(d.state)
        assert code == 0, "the loop succeeded: the run's exit code is 0, not 130"
        assert ended <= seen_finished, "the run ended when its loops did, not at shutdown"
    finally:
        kill_daemon(d.pid)


def test_sigterm_to_a_foreground_serve_records_what_the_loops_did(tmp_path: Path) -> None:
    sleeper = "import time; print('working', flush=True); time.sleep(120)"
    config = tmp_path / "loops.toml"
    config.write_text(
        "\n".join(
            [
                supervisor_table(2),
                command_agent("sleepy", sleeper),
                loop("busy", "sleepy", max_iterations=3, done_marker="NEVER-SAID"),
            ]
        ),
        encoding="utf-8",
    )
    state = tmp_path / "fg"
    proc = serve_foreground(config, state, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the event log: wait for the agent to be running
            if "iteration 1" in line:
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "exit code 130" not in out
        assert "exit code 1 (signal SIGTERM)" in out, out
        assert _run_row(state)[2] == 1  # a loop was stopped: exit code 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
