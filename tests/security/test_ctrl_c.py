"""Issue 10 item 11: a double Ctrl-C always ends in exit 130, with no traceback and no
process left behind.

The first SIGINT starts the shutdown; a second one 0-200 ms later used to land
after the signal receiver had been closed (while the journal was being finished)
and raise KeyboardInterrupt there: a traceback, exit -2, a run never marked ended.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
from daemon import serve_foreground
from helpers import (
    GRANDCHILD_SCRIPT,
    PY,
    alive,
    cli_env,
    command_agent,
    loop,
    read_pids,
    supervisor_table,
    wait_gone,
    write_config,
)

from supervisor import runtime
from supervisor.cli import entry

AGENTS = ("a", "b", "c")


def wait_for_line(proc: subprocess.Popen[bytes], needle: bytes, timeout: float = 20) -> bytes:
    """Read the child's stdout until a line contains `needle` (the run has started)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(deadline - time.monotonic()):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
            if needle in seen:
                return seen
    raise AssertionError(f"no {needle!r} on stdout within {timeout}s: {seen[-2000:]!r}")


@pytest.mark.parametrize("repeat", range(3))
@pytest.mark.parametrize("gap_ms", [0, 10, 50, 100, 200])
def test_a_second_ctrl_c_during_shutdown_still_exits_130_quietly(
    tmp_path: Path, gap_ms: int, repeat: int
) -> None:
    parts = [supervisor_table(len(AGENTS)), command_agent("sleeper", GRANDCHILD_SCRIPT)]
    for name in AGENTS:
        (tmp_path / name).mkdir()
        parts.append(loop(name, "sleeper", workspace=name, done_marker="DONE"))
    write_config(tmp_path, *parts)
    proc = subprocess.Popen(
        [PY, "-m", "supervisor", "run", "loops.toml", "--headless"],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    pid_files = [tmp_path / name / "pids.txt" for name in AGENTS]
    try:
        while not all(read_pids(f) for f in pid_files):  # each agent and its grandchild
            wait_for_line(proc, b"started")
        children = [pid for f in pid_files for pid in read_pids(f)]
        assert len(children) == 2 * len(AGENTS)
        proc.send_signal(signal.SIGINT)
        if gap_ms:
            time.sleep(gap_ms / 1000)  # the gap under test, not a guess at readiness
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        left = wait_gone(children, timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for pid in alive(p for f in pid_files for p in read_pids(f)):
            os.kill(pid, signal.SIGKILL)  # never leak them, even when the test fails
    text = stderr.decode(errors="replace")
    assert "Traceback" not in text, text
    assert "KeyboardInterrupt" not in text, text
    assert proc.returncode == 130, (proc.returncode, text)
    assert left == [], "every agent and grandchild was killed"


@pytest.mark.parametrize("repeat", range(2))
@pytest.mark.parametrize("gap_ms", [0, 50, 200])
def test_serve_in_the_foreground_takes_a_double_ctrl_c_quietly(
    tmp_path: Path, gap_ms: int, repeat: int
) -> None:
    """`serve` stops on SIGINT like on SIGTERM (exit 0: it was asked to stop); a second
    one during its shutdown changes nothing."""
    parts = [supervisor_table(len(AGENTS)), command_agent("sleeper", GRANDCHILD_SCRIPT)]
    for name in AGENTS:
        (tmp_path / name).mkdir()
        parts.append(loop(name, "sleeper", workspace=name, done_marker="DONE"))
    write_config(tmp_path, *parts)
    proc = serve_foreground("loops.toml", "state", cwd=tmp_path)
    pid_files = [tmp_path / name / "pids.txt" for name in AGENTS]
    try:
        deadline = time.monotonic() + 20  # serve logs no transcripts: poll for the agents
        while not all(len(read_pids(f)) == 2 for f in pid_files):
            assert time.monotonic() < deadline, "the agents never started"
            time.sleep(0.05)
        children = [pid for f in pid_files for pid in read_pids(f)]
        proc.send_signal(signal.SIGINT)
        if gap_ms:
            time.sleep(gap_ms / 1000)  # the gap under test
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        left = wait_gone(children, timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for pid in alive(p for f in pid_files for p in read_pids(f)):
            os.kill(pid, signal.SIGKILL)
    assert "Traceback" not in stderr, stderr
    assert proc.returncode == 0, (proc.returncode, stderr)
    assert "shutting down: signal SIGINT" in stderr
    assert left == []


# A start-up made slow on purpose: importing `supervisor.runtime` (which every command
# needs) writes a mark file and then waits, so the test can press Ctrl-C while the
# CLI is still importing (on a loaded machine that window lasted seconds: a Ctrl-C
# there printed a KeyboardInterrupt traceback and exited -2).
SLOW_IMPORT = """\
import importlib.abc, os, sys, time

class _SlowRuntime(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "supervisor.runtime":
            open(os.environ["IMPORT_MARK"], "w").close()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                time.sleep(0.01)
        return None

sys.meta_path.insert(0, _SlowRuntime())
"""


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_while_the_cli_is_still_importing_exits_130_quietly(
    tmp_path: Path, presses: int
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_IMPORT)
    mark = tmp_path / "importing"
    write_config(tmp_path, command_agent("a", "print('hi')"), loop("l", "a", done_marker="hi"))
    proc = subprocess.Popen(
        [PY, "-m", "supervisor", "run", "loops.toml", "--headless"],
        cwd=tmp_path,
        env=cli_env(PYTHONPATH=str(site), IMPORT_MARK=str(mark)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not mark.exists():  # the CLI is inside its imports now
            assert proc.poll() is None, "the CLI ended before importing its runtime"
            assert time.monotonic() < deadline, "the CLI never imported its runtime"
            time.sleep(0.01)
        for press in range(presses):
            if press:
                time.sleep(0.05)  # the gap under test
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in stderr + stdout, stderr
    assert "KeyboardInterrupt" not in stderr, stderr
    assert proc.returncode == 130, (proc.returncode, stderr)
    assert not (tmp_path / ".loopvisor").exists(), "nothing was started"


def test_the_loopvisor_command_starts_at_the_interrupt_proof_entry() -> None:
    """The installed `loopvisor` script imports its entry module before anything else,
    so the same holds for it as for `python -m supervisor`."""
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["loopvisor"] == "supervisor.cli.entry:main"
    assert entry.EXIT_INTERRUPTED == runtime.EXIT_INTERRUPTED
