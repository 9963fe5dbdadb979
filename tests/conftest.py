"""Shared pytest fixtures: the ones every test gets (asyncio for anyio, no leaked
child process) and the ones tests of several areas ask for by name (a served daemon,
kill -9 and resume sessions, the Anthropic key). An area's own fixtures live in its
folder's conftest.py.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from daemon import Daemon, kill_daemon, sim_loops_toml, start_daemon
from resume_support import Harness

LEAK_GRACE_S = float(os.environ.get("LOOPVISOR_TEST_LEAK_GRACE", "10"))
"""How long a test's children may take to exit after it ends (a killed supervisor's
agents are reaped by the next one, which the test waited for; a slow machine under
pytest-xdist needs more than a moment)."""


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, the loop Textual uses."""
    return "asyncio"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A detached `serve` of two endless sim loops (`daemon.sim_loops_toml`), killed
    with everything it started at teardown."""
    d = start_daemon(tmp_path, sim_loops_toml())
    try:
        yield d
    finally:
        kill_daemon(d.pid)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """`loopvisor run --json` sessions on tmp_path/loops.toml and tmp_path/state, to
    kill -9 and resume; at teardown nothing they started survives."""
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test key in ANTHROPIC_API_KEY (tests check it never shows), and the SDK's
    default base URL (every agent is given the fake server's)."""
    from anthropic_support import KEY  # here: it loads the SDK, which most tests never need

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    """Every test ends with no child process of ours left running: one that leaks one
    fails itself, instead of an unrelated test failing later on a ResourceWarning (or
    a process outliving the run, the thing loopvisor promises never to do)."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    deadline = time.monotonic() + LEAK_GRACE_S
    while (left := _running(me, before)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        described = ", ".join(f"{p.pid} {_cmdline(p)}" for p in left)
        for p in left:
            _kill_group_of(p)
        pytest.fail(f"the test left processes running: {described}")


def _running(me: psutil.Process, before: set[int]) -> list[psutil.Process]:
    out = []
    for p in me.children(recursive=True):
        try:
            if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())[:120]
    except psutil.Error:
        return "?"


def _kill_group_of(p: psutil.Process) -> None:
    """Kill the leaked process and, when it leads one, its whole process group."""
    try:
        if os.getpgid(p.pid) == p.pid:
            os.killpg(p.pid, signal.SIGKILL)
        else:
            p.kill()
    except (ProcessLookupError, PermissionError, psutil.Error):
        pass
