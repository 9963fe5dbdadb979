"""`loopvisor CONFIG` in a real pseudo-terminal: the TUI starts, `q` asks, `y` stops
the loops and quits with the run's exit code and prints the summary, the run is
journalled, and a hang-up (SSH dropped) ends it as an interruption with no child
process left behind."""

from __future__ import annotations

import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager
from fcntl import ioctl
from pathlib import Path

import psutil
from helpers import PY, cli_env, loop, sim_agent, supervisor_table, write_config

from supervisor.journal.reader import JournalReader

SLOW_CHECK = [PY, "-c", "import time; time.sleep(60)"]


class Terminal:
    def __init__(self, proc: subprocess.Popen[bytes], master: int) -> None:
        self.proc = proc
        self.master = master
        self.output = b""

    def read_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:
                    return

    def wait_for(self, text: bytes, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while text not in self.output:
            assert time.monotonic() < end, f"{text!r} never shown; got {self.output[-500:]!r}"
            self.read_for(0.1)

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())
        self.read_for(0.5)

    def exit_code(self, timeout: float = 20.0) -> int:
        end = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < end, "the TUI did not exit"
            self.read_for(0.1)
        return self.proc.returncode


@contextmanager
def tui_in_terminal(config: Path) -> Iterator[Terminal]:
    master, slave = pty.openpty()
    ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {**cli_env(), "TERM": "xterm-256color"}
    proc = subprocess.Popen(
        [PY, "-m", "supervisor", str(config)],
        cwd=config.parent,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    term = Terminal(proc, master)
    try:
        yield term
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def config(tmp_path: Path, *, slow_check: bool = False) -> Path:
    checks = [{"name": "slow", "run": SLOW_CHECK}] if slow_check else None
    return write_config(
        tmp_path,
        supervisor_table(4),
        sim_agent("steady", rate=100, reply_tokens=10, converge_after=1_000_000),
        loop("alpha", "steady", max_iterations=100_000, done_marker="NEVER", checks=checks),
        loop("beta", "steady", max_iterations=100_000, done_marker="NEVER", on_stuck="continue"),
    )


def test_q_asks_then_stops_the_loops_and_exits_with_the_runs_code(tmp_path: Path) -> None:
    path = config(tmp_path)
    with tui_in_terminal(path) as term:
        term.wait_for(b"alpha")
        term.read_for(1.0)
        term.type("q")
        term.wait_for(b"Stop and quit")
        term.type("y")
        assert term.exit_code() == 1  # the loops were stopped
        term.read_for(0.2)
        # the summary stays on the terminal after the console is gone
        summary = term.output.rsplit(b"\x1b[?1049l", 1)[-1]  # after leaving the alt screen
        assert b"alpha" in summary
        assert b"exit code 1" in summary
    with JournalReader(tmp_path / ".loopvisor") as reader:
        run = reader.latest_run()
        assert run is not None
        assert run.exit_code == 1
        assert {row.loop: row.state for row in reader.status()} == {
            "alpha": "stopped",
            "beta": "stopped",
        }


def test_hang_up_interrupts_the_run_and_leaves_no_process(tmp_path: Path) -> None:
    path = config(tmp_path, slow_check=True)
    with tui_in_terminal(path) as term:
        term.wait_for(b"alpha")
        parent = psutil.Process(term.proc.pid)
        deadline = time.monotonic() + 20
        children: list[psutil.Process] = []
        while not children:  # alpha's check (sleep 60) is running
            assert time.monotonic() < deadline
            children = [
                c
                for c in parent.children(recursive=True)
                if "time.sleep(60)" in " ".join(c.cmdline())
            ]
            term.read_for(0.1)
        term.proc.send_signal(signal.SIGHUP)
        assert term.exit_code() == 130
        _, alive = psutil.wait_procs(children, timeout=5)
        assert not alive
