"""No process outlives its run (issue 10, item 5): escapers are killed.

An agent, a check or a tool may start processes that leave its process group
(`setsid`), are orphaned (double fork) and ignore SIGTERM. Each test runs the real CLI
with such a process tree and asserts, by the pids the script wrote, that none of them
is alive once the run (or the turn) is over.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    PY,
    alive,
    cli_env,
    command_agent,
    json_lines,
    loop,
    read_pids,
    run_cli,
    sim_agent,
    supervisor_table,
    table,
    wait_for,
    wait_gone,
    write_config,
)

from supervisor import cgroup, process, reaper


def escaper_script(*, scrubbed: bool = False) -> str:
    """A command that starts processes meant to outlive it, writes their pids to the
    file argv[1] names (atomically, once they are set up) and says DONE; with a second
    argument it then hangs, so that its turn must be cut. Run again where the pid file
    exists (a resumed iteration) it only says DONE.

    Plain: a `setsid` child that ignores SIGTERM and a double-forked daemon (setsid,
    SIGTERM ignored, its middle process gone). `scrubbed`: one `setsid` child with an
    empty environment instead, so no tag finds it (only a cgroup can)."""
    if scrubbed:
        escaper = "['setsid', 'env', '-i', 'sh', '-c', 'exec sleep 300']"
    else:  # `setsid` execs in place: the pid is the shell's, then sleep's
        escaper = "['setsid', 'sh', '-c', 'trap \"\" TERM; exec sleep 300']"
    daemon = (
        "r, w = os.pipe()\n"
        "middle = os.fork()\n"
        "if middle == 0:\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "        null = os.open(os.devnull, os.O_RDWR)\n"
        "        for fd in (0, 1, 2):\n"
        "            os.dup2(null, fd)\n"
        "        os.write(w, str(os.getpid()).encode()); os.close(w)\n"
        "        time.sleep(300)\n"
        "    os._exit(0)\n"
        "os.close(w)\n"
        "os.waitpid(middle, 0)\n"
        "pids.append(os.read(r, 32).decode())\n"
    )
    return (
        "import os, signal, subprocess, sys, time\n"
        "out = sys.argv[1]\n"
        "if os.path.exists(out):\n"
        "    print('DONE'); sys.exit(0)\n"
        f"escaper = subprocess.Popen({escaper},\n"
        "    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "escaper.returncode = 0  # not waited for: it must outlive us\n"
        "pids = [str(escaper.pid)]\n"
        + ("" if scrubbed else daemon)
        + "deadline = time.monotonic() + 10\n"  # until its trap is set and sleep runs
        "while open(f'/proc/{escaper.pid}/comm').read().strip() != 'sleep':\n"
        "    assert time.monotonic() < deadline\n"
        "    time.sleep(0.005)\n"
        "open(out + '.tmp', 'w').write(' '.join(pids))\n"
        "os.rename(out + '.tmp', out)\n"
        "print('DONE', flush=True)\n"
        "if len(sys.argv) > 2:\n"
        "    time.sleep(300)\n"
    )


ESCAPE = escaper_script()
SCRUBBED = escaper_script(scrubbed=True)


@pytest.fixture
def leftovers() -> Iterator[list[Path]]:
    """Pid files whose processes are SIGKILLed after the test, whatever its outcome."""
    files: list[Path] = []
    yield files
    for path in files:
        for pid in alive(read_pids(path)):
            os.kill(pid, signal.SIGKILL)


NO_CGROUPS = (
    "try:\n"
    "    from supervisor import cgroup\n"
    "    cgroup._probed = True  # probed, none found: the tag scans alone\n"
    "except ImportError:\n"
    "    pass\n"
)


@pytest.fixture(params=["cgroup", "tag only"])
def containment(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """The CLI as it runs here (with a cgroup per group where the machine has them),
    and as on a machine without a writable cgroup v2 hierarchy (a `sitecustomize`
    that makes the probe find none): the tag scans must do it alone there."""
    if request.param == "tag only":
        site = tmp_path_factory.mktemp("no-cgroups")
        (site / "sitecustomize.py").write_text(NO_CGROUPS)
        monkeypatch.setenv("PYTHONPATH", str(site))
    elif not cgroup.available():
        pytest.skip("no writable cgroup v2 hierarchy here")
    return str(request.param)


def escaped_pids(path: Path) -> list[int]:
    pids = read_pids(path)
    assert len(pids) == 2, f"the script did not write its pids: {pids}"
    return pids


def test_an_agents_setsid_child_and_daemon_die_with_its_turn(
    tmp_path: Path, leftovers: list[Path], containment: str
) -> None:
    (tmp_path / "ws").mkdir()
    write_config(
        tmp_path,
        supervisor_table(),
        command_agent("escaper", ESCAPE, "pids.txt"),
        loop("esc", "escaper", workspace="ws", done_marker="DONE", max_iterations=1),
    )
    pid_file = tmp_path / "ws" / "pids.txt"
    leftovers.append(pid_file)
    proc = run_cli("run", "--headless", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert alive(escaped_pids(pid_file)) == []


def test_a_checks_setsid_child_and_daemon_die_with_the_check(
    tmp_path: Path, leftovers: list[Path]
) -> None:
    (tmp_path / "ws").mkdir()
    check = {"name": "escape", "run": [PY, "-c", ESCAPE, "check-pids.txt"]}
    write_config(
        tmp_path,
        supervisor_table(),
        sim_agent("s", reply_tokens=2),
        loop("chk", "s", workspace="ws", checks=[check], max_iterations=1),
    )
    pid_file = tmp_path / "ws" / "check-pids.txt"
    leftovers.append(pid_file)
    proc = run_cli("run", "--headless", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert alive(escaped_pids(pid_file)) == []


def test_a_turn_cut_by_its_timeout_leaves_no_escaper(
    tmp_path: Path, leftovers: list[Path], containment: str
) -> None:
    (tmp_path / "ws").mkdir()
    write_config(
        tmp_path,
        supervisor_table(),
        command_agent("hang", ESCAPE, "pids.txt", "hang", timeout="1s"),
        loop("cut", "hang", workspace="ws", done_marker="NEVER", max_iterations=1),
    )
    pid_file = tmp_path / "ws" / "pids.txt"
    leftovers.append(pid_file)
    proc = run_cli("run", "--headless", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "timed out" in proc.stdout
    assert alive(escaped_pids(pid_file)) == []


def test_a_stopped_run_leaves_no_escaper(tmp_path: Path, leftovers: list[Path]) -> None:
    (tmp_path / "ws").mkdir()
    write_config(
        tmp_path,
        supervisor_table(),
        command_agent("hang", ESCAPE, "pids.txt", "hang"),
        loop("cut", "hang", workspace="ws", done_marker="NEVER", max_iterations=1),
    )
    pid_file = tmp_path / "ws" / "pids.txt"
    leftovers.append(pid_file)
    with subprocess.Popen(
        [PY, "-m", "supervisor", "run", "--headless"],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as sup:
        try:
            deadline = time.monotonic() + 15
            while not read_pids(pid_file) and time.monotonic() < deadline:
                time.sleep(0.02)
            sup.send_signal(signal.SIGTERM)
            _, stderr = sup.communicate(timeout=20)
        finally:
            if sup.poll() is None:
                sup.kill()
    assert sup.returncode == 130, stderr
    assert alive(escaped_pids(pid_file)) == []


def kill_9_once_written(tmp_path: Path, pid_file: Path) -> list[int]:
    """`run --json` of tmp_path/loops.toml until its agent has written `pid_file`, then
    kill -9 of the supervisor alone (its children are on their own): the pids written."""
    sup = subprocess.Popen(
        [PY, "-m", "supervisor", "run", "--json"],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while not read_pids(pid_file) and time.monotonic() < deadline:
            time.sleep(0.02)
        return read_pids(pid_file)
    finally:
        sup.kill()
        sup.wait()


def test_resume_after_kill_9_kills_what_the_dead_supervisor_left(
    tmp_path: Path, leftovers: list[Path]
) -> None:
    (tmp_path / "ws").mkdir()
    write_config(
        tmp_path,
        supervisor_table(),
        command_agent("hang", ESCAPE, "pids.txt", "hang"),
        loop("cut", "hang", workspace="ws", done_marker="DONE", max_iterations=2),
    )
    pid_file = tmp_path / "ws" / "pids.txt"
    leftovers.append(pid_file)
    pids = kill_9_once_written(tmp_path, pid_file)
    assert len(pids) == 2, f"the script did not write its pids: {pids}"
    assert alive(pids) == pids
    proc = run_cli("run", "--resume", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert wait_gone(pids, timeout=1) == []
    (notice,) = [
        e["message"]
        for e in json_lines(proc.stdout)
        if e["type"] == "notice" and "left running" in e["message"]
    ]
    assert "(cut iteration 1 turn)" in notice  # what they were, from their tags


REAP_SCRIPT = """
import anyio, psutil, sys
from pathlib import Path
from supervisor import reaper
from supervisor.process import run_captured

async def main():
    assert reaper.become_subreaper()
    # Orphans that exit by themselves while the command's output drains: they were
    # re-parented to us (one left the session), so only we can wait for them.
    run = await run_captured(
        ["sh", "-c", "(sleep 0.1 &); (setsid sleep 0.1 &); exit 7"], cwd=Path.cwd()
    )
    zombies = [c.pid for c in psutil.Process().children() if c.status() == "zombie"]
    print(run.exit_code, zombies)

anyio.run(main)
"""


def test_a_subreaper_reaps_the_orphans_it_adopts(tmp_path: Path) -> None:
    """Orphans re-parented to the supervisor are waited for (no zombies pile up), and
    the exit code of the command asyncio waits for is not stolen by that reaping."""
    proc = subprocess.run(
        [PY, "-c", REAP_SCRIPT],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == "7 []", proc.stdout
    assert proc.stderr == ""


def test_an_escaper_that_scrubs_its_environment_dies_by_its_cgroup(
    tmp_path: Path, leftovers: list[Path]
) -> None:
    if not cgroup.available():
        pytest.skip("no writable cgroup v2 hierarchy here: the tag is all there is")
    (tmp_path / "ws").mkdir()
    write_config(
        tmp_path,
        supervisor_table(),
        command_agent("scrub", SCRUBBED, "pids.txt"),
        loop("esc", "scrub", workspace="ws", done_marker="DONE", max_iterations=1),
    )
    pid_file = tmp_path / "ws" / "pids.txt"
    leftovers.append(pid_file)
    proc = run_cli("run", "--headless", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (pid,) = read_pids(pid_file)
    assert alive([pid]) == []


def test_resume_after_kill_9_kills_a_scrubbed_escaper_by_its_cgroup(
    tmp_path: Path, leftovers: list[Path]
) -> None:
    if not cgroup.available():
        pytest.skip("no writable cgroup v2 hierarchy here: the tag is all there is")
    (tmp_path / "ws").mkdir()
    write_config(
        tmp_path,
        supervisor_table(),
        command_agent("scrub", SCRUBBED, "pids.txt", "hang"),
        loop("esc", "scrub", workspace="ws", done_marker="DONE", max_iterations=2),
    )
    pid_file = tmp_path / "ws" / "pids.txt"
    leftovers.append(pid_file)
    (pid,) = kill_9_once_written(tmp_path, pid_file)
    assert alive([pid]) == [pid]
    proc = run_cli("run", "--resume", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert wait_gone([pid], timeout=1) == []


FORKS_AT_ONCE = (
    "setsid env -i sh -c 'exec sleep 300' </dev/null >/dev/null 2>&1 &\n"
    "echo $$! > pids.txt\n"
    "echo DONE\n"
)
"""A shell agent whose first act is to start a scrubbed `setsid` escaper: it forks
within a millisecond of its start, before a move from outside could catch it."""


def test_an_escaper_forked_at_once_is_in_the_cgroup_from_the_start(
    tmp_path: Path, leftovers: list[Path]
) -> None:
    if not cgroup.available():
        pytest.skip("no writable cgroup v2 hierarchy here: the tag is all there is")
    (tmp_path / "ws").mkdir()
    write_config(
        tmp_path,
        supervisor_table(),
        table("agents.fast", kind="command", command=["sh", "-c", FORKS_AT_ONCE]),
        loop("esc", "fast", workspace="ws", done_marker="DONE", max_iterations=1),
    )
    pid_file = tmp_path / "ws" / "pids.txt"
    leftovers.append(pid_file)
    proc = run_cli("run", "--headless", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (pid,) = read_pids(pid_file)
    assert alive([pid]) == []


@pytest.mark.anyio
async def test_an_agent_gone_before_it_is_adopted_still_has_its_escaper_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a loaded machine the agent can fork, print and exit before the supervisor
    moves it into its cgroup from outside: that move then fails (the pid is gone) and
    must not cost the cgroup the child had already entered by itself."""
    if not cgroup.available():
        pytest.skip("no writable cgroup v2 hierarchy here: the tag is all there is")
    real_adopt = cgroup.GroupCgroup.adopt

    def adopt_too_late(self: cgroup.GroupCgroup, pid: int) -> bool:
        deadline = time.monotonic() + 10
        while alive([pid]) and time.monotonic() < deadline:  # the agent exits first
            time.sleep(0.005)
        return real_adopt(self, pid)

    monkeypatch.setattr(cgroup.GroupCgroup, "adopt", adopt_too_late)
    script = FORKS_AT_ONCE.replace("$$!", "$!")
    async with process.GroupProcess(["sh", "-c", script], cwd=tmp_path) as proc:
        await proc.wait()
    (pid,) = read_pids(tmp_path / "pids.txt")
    assert wait_gone([pid], timeout=5) == []


IGNORE_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"


def ignores_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))


@pytest.mark.anyio
async def test_a_sweep_kills_its_own_tag_and_nothing_else() -> None:
    """A run's (or group's) sweep kills every process carrying its tag, SIGTERM or
    not, and leaves alone those of another run and an exact tag's longer sibling."""

    def start(tag: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [PY, "-c", IGNORE_TERM],
            env={**os.environ, reaper.PROC_ENV: tag},
            start_new_session=True,
        )

    mine = [start("run-a/l/1/turn#1"), start("run-a/l/2/check#12")]
    others = [start("run-b/l/1/turn#1"), start("run-a/l/1/turn#10")]
    try:
        await wait_for(lambda: all(ignores_sigterm(p.pid) for p in mine + others))
        exact = await reaper.kill_tagged(reaper.has_tag("run-a/l/1/turn#1"), grace=0.2)
        assert exact == [mine[0].pid]
        by_run = await reaper.kill_tagged(reaper.has_tag(prefix="run-a/"), grace=0.2)
        assert sorted(by_run) == sorted([mine[1].pid, others[1].pid])
        assert alive([p.pid for p in mine]) == []  # (a subreaper may have reaped them)
        assert alive([p.pid for p in others]) == [others[0].pid]
    finally:
        for proc in mine + others:
            proc.kill()
            proc.wait()
