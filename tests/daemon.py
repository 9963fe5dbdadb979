"""`loopvisor serve` as a real process for tests: detached daemons of sim loops in
tmp_path (`start_daemon`, killed with their process group and descendants by
`kill_daemon`), a foreground `serve` (`serve_foreground`), and `ctl` against them.

Every test that starts `serve` starts it here, so that how it is launched, waited for
and killed is written once (the control area, the console's attach tests and the
security tests all use it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil
from helpers import PY, alive, cli_env, loop, sim_agent, supervisor_table, wait_gone

LOOPVISOR = [PY, "-m", "supervisor"]
"""The command line, as a user runs it (`python -m supervisor` is `loopvisor`)."""

T = TypeVar("T")


def lv(*args: str | Path, cwd: Path, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """`loopvisor ARGS` in `cwd` to its end: stdin not a terminal, output captured."""
    return subprocess.run(
        [*LOOPVISOR, *map(str, args)],
        cwd=cwd,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def poll(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Call `predicate` until it returns something truthy, and return that (fails the
    test after `timeout`): for state another process owns (a daemon's status, a file)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def sim_loops_toml(*extra: str, max_iterations: int = 100_000, **budget: object) -> str:
    """Two sim loops that never end on their own: ~0.5 s per iteration."""
    parts = [supervisor_table(4, **budget), sim_agent("slow", rate=40, reply_tokens=20)]
    for name in ("l0", "l1"):
        parts.append(
            loop(
                name,
                "slow",
                max_iterations=max_iterations,
                done_marker="NEVER-SAID",
                on_stuck="continue",
            )
        )
    return "\n".join([*parts, *extra])


@dataclass
class Daemon:
    """A detached `serve`: its folder, config, state dir and pid."""

    cwd: Path
    config: Path
    state: Path
    pid: int

    @property
    def socket(self) -> Path:
        return self.state / "control.sock"

    @property
    def log(self) -> str:
        return (self.state / "serve.log").read_text(encoding="utf-8", errors="replace")

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return lv("ctl", *args, "--state-dir", self.state, cwd=self.cwd)

    def spawn_ctl(self, *args: str, **popen: Any) -> subprocess.Popen[Any]:
        """`ctl ARGS` against this daemon, not waited for (`ctl tail` follows until a
        signal); `popen` says where its output goes."""
        return subprocess.Popen(
            [*LOOPVISOR, "ctl", *args, "--state-dir", str(self.state)],
            cwd=self.cwd,
            env=cli_env(),
            stdin=subprocess.DEVNULL,
            **popen,
        )

    def status(self) -> dict[str, Any]:
        r = self.ctl("status", "--json")
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr, alive([self.pid]))
        data: dict[str, Any] = json.loads(r.stdout)
        return data

    def loop(self, name: str) -> dict[str, Any]:
        return next(x for x in self.status()["loops"] if x["name"] == name)

    def resume(self) -> Daemon:
        """`serve --detach --resume` on this daemon's config and state dir (after it
        died): the new daemon."""
        return _detach(self.cwd, self.config, self.state, "--resume")


def start_daemon(tmp_path: Path, toml: str) -> Daemon:
    """`serve --detach` of `toml` (written to tmp_path/loops.toml), state in tmp_path/state."""
    config = tmp_path / "loops.toml"
    config.write_text(toml, encoding="utf-8")
    return _detach(tmp_path, config, tmp_path / "state")


def _detach(cwd: Path, config: Path, state: Path, *extra: str) -> Daemon:
    r = lv("serve", config, "--state-dir", state, "--detach", *extra, cwd=cwd, timeout=45)
    assert r.returncode == 0, r.stdout + r.stderr
    pid = int((state / "serve.pid").read_text())
    assert f"(pid {pid})" in r.stdout
    return Daemon(cwd, config, state, pid)


def kill_daemon(pid: int) -> None:
    """SIGTERM, then SIGKILL the process group and every descendant still alive."""
    try:
        family = [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return
    if alive([pid]):
        os.kill(pid, signal.SIGTERM)
    if wait_gone(family, timeout=10):
        for p in alive(family):
            with contextlib.suppress(OSError):
                os.killpg(p, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
        wait_gone(family, timeout=5)


def serve_foreground(
    config: Path | str, state: Path | str, *, cwd: Path, **env: str
) -> subprocess.Popen[str]:
    """`loopvisor serve CONFIG --state-dir STATE` in the foreground (its event log on
    stdout, its notices on stderr, both piped as text), in a session of its own so
    that a test signals it alone; `env` is added to the test's environment."""
    return subprocess.Popen(
        [*LOOPVISOR, "serve", str(config), "--state-dir", str(state)],
        cwd=cwd,
        env=cli_env(**env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
