"""Killing what ended groups left costs O(processes) per sweep, not per group (issue 12).

At each group's end `reaper.kill_tagged` read the environment of every process on the
machine: with 50 agents streaming, 18-27% of the supervisor's main thread. Where a
group has a cgroup, the cgroup kills what the group left, and one `sweep.Sweeper`
scan covers every group that ended within `SWEEP_S`, for a process that moved itself
out of its cgroup; without cgroups each group still scans at its end. These tests
count the environment scans (untimed) and check that what escaped still dies, politely
first, either way.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import psutil
import pytest
from helpers import (
    PY,
    Recorded,
    alive,
    command_agent,
    load,
    loop,
    read_pids,
    run_recorded,
    supervisor_table,
    table,
    wait_for,
)

from supervisor import cgroup, reaper, sweep
from supervisor.spec import Config

pytestmark = pytest.mark.anyio

AGENTS = 12
needs_cgroup = pytest.mark.skipif(not cgroup.available(), reason="no writable cgroup v2 here")


@pytest.fixture
def env_scans(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The needle of every scan of all processes' environments, in order."""
    needles: list[bytes] = []
    real = reaper._environments

    def counted(needle: bytes) -> Iterator[tuple[int, dict[str, str]]]:
        needles.append(needle)
        return real(needle)

    monkeypatch.setattr(reaper, "_environments", counted)
    return needles


@pytest.fixture(params=["cgroup", "tag only"])
def containment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test twice: with a cgroup per group (where the machine has them) and with
    the tag scans alone (a machine without a writable cgroup v2 hierarchy)."""
    if request.param == "cgroup" and not cgroup.available():
        pytest.skip("no writable cgroup v2 here")
    if request.param == "tag only":
        monkeypatch.setattr(cgroup, "_probed", True)
        monkeypatch.setattr(cgroup, "_base", None)
    return str(request.param)


def quick_agents(tmp_path: Path) -> Config:
    return load(
        tmp_path,
        supervisor_table(max_concurrent=AGENTS),
        table("agents.quick", kind="command", command=["sh", "-c", "echo DONE"]),
        *(loop(f"l{i}", "quick", max_iterations=1, done_marker="DONE") for i in range(AGENTS)),
    )


@needs_cgroup
async def test_groups_with_a_cgroup_share_the_environment_scan(
    tmp_path: Path, env_scans: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweep, "SWEEP_S", 3600.0)  # no sweep falls due in this run
    rec = await run_recorded(quick_agents(tmp_path))
    assert rec.summary is not None
    assert rec.summary.exit_code == 0
    # 12 groups ended: no scan of their own; the run's end scans once for all of it
    assert len(env_scans) == 1, env_scans
    assert env_scans[0] == f"{reaper.PROC_ENV}={rec.supervisor.run_id}/".encode()


async def test_without_cgroups_each_group_scans_at_its_end(
    tmp_path: Path, env_scans: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cgroup, "_probed", True)
    monkeypatch.setattr(cgroup, "_base", None)
    rec = await run_recorded(quick_agents(tmp_path))
    assert rec.summary is not None
    assert rec.summary.exit_code == 0
    assert len(env_scans) == AGENTS + 1  # one per group, one for the run


MOVES_OUT = (
    "import os, subprocess, sys, time\n"
    "script = '''\n"
    "import os, time\n"
    "own = open('/proc/self/cgroup').read().split('0::', 1)[1].strip()\n"
    "mount = next(l.split()[1] for l in open('/proc/self/mounts') if l.split()[2] == 'cgroup2')\n"
    "base = mount + os.path.dirname(own)\n"  # the supervisor's loopvisor-PID cgroup
    "open(base + '/cgroup.procs', 'w').write(str(os.getpid()))\n"
    "open('moved.txt.tmp', 'w').write(str(os.getpid()))\n"
    "os.rename('moved.txt.tmp', 'moved.txt')\n"
    "time.sleep(300)\n"
    "'''\n"
    "subprocess.Popen([sys.executable, '-c', script], start_new_session=True,\n"
    "    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "while not os.path.exists('moved.txt'):\n"
    "    time.sleep(0.005)\n"
    "print('DONE', flush=True)\n"
)
"""Starts a child that leaves its session and moves itself out of its cgroup (into the
supervisor's own loopvisor-PID one: what an agent with write access there can do),
keeping its tag; writes its pid to moved.txt and says DONE."""


@needs_cgroup
async def test_a_process_that_left_its_cgroup_dies_by_the_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweep, "SWEEP_S", 0.2)
    (tmp_path / "ws").mkdir()
    config = load(
        tmp_path,
        supervisor_table(max_concurrent=2),
        command_agent("mover", MOVES_OUT),
        table("agents.sleeper", kind="command", command=["sleep", "30"]),
        loop("mover", "mover", workspace="ws", max_iterations=1, done_marker="DONE"),
        loop("keeper", "sleeper", max_iterations=1, done_marker="NEVER"),
    )
    moved: list[int] = []

    async def during(rec: Recorded) -> None:
        sup = rec.supervisor
        await wait_for(lambda: bool(read_pids(tmp_path / "ws" / "moved.txt")), timeout=15)
        moved[:] = read_pids(tmp_path / "ws" / "moved.txt")
        await wait_for(lambda: not alive(moved), timeout=15)
        # ... while the run goes on: the sweep killed it, not the run's end
        assert sup.runners["keeper"].state == "running"
        await sup.stop("keeper")

    await run_recorded(config, during=during, timeout=40)
    assert moved
    assert alive(moved) == []


POLITE = (
    "import os, subprocess, time\n"
    "kid = subprocess.Popen(['setsid', 'sh', '-c',\n"
    "    'trap \"echo TERM > term.txt; exit 0\" TERM; echo up > up.txt;'\n"
    "    ' while :; do sleep 0.05; done'],\n"
    "    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "kid.returncode = 0  # not waited for: it must outlive us\n"
    "while not os.path.exists('up.txt'):\n"
    "    time.sleep(0.005)\n"
    "open('kid.txt', 'w').write(str(kid.pid))\n"
    "print('DONE', flush=True)\n"
)
"""Leaves behind a `setsid` child that says TERM (in term.txt) when it gets SIGTERM."""


async def test_what_a_group_left_gets_sigterm_first(tmp_path: Path, containment: str) -> None:
    (tmp_path / "ws").mkdir()
    config = load(
        tmp_path,
        supervisor_table(),
        command_agent("polite", POLITE),
        loop("p", "polite", workspace="ws", max_iterations=1, done_marker="DONE"),
    )
    rec = await run_recorded(config, timeout=30)
    assert rec.summary is not None
    assert rec.summary.exit_code == 0
    assert alive(read_pids(tmp_path / "ws" / "kid.txt")) == []
    assert (tmp_path / "ws" / "term.txt").read_text().strip() == "TERM", containment


def test_descendants_walk_finds_the_same_tree_as_psutil(tmp_path: Path) -> None:
    script = (
        "import subprocess, sys, time\n"
        "kids = [subprocess.Popen(['sh', '-c', 'sleep 30 & sleep 30 & wait']) for _ in range(2)]\n"
        "print('up', flush=True)\n"
        "time.sleep(30)\n"
    )
    with psutil.Popen([PY, "-c", script], stdout=-1, cwd=tmp_path) as root:
        try:
            assert root.stdout is not None
            assert root.stdout.readline() == b"up\n"
            want: set[int] = set()
            while len(want) < 6:  # until each sh has started its two sleeps
                time.sleep(0.01)
                want = {p.pid for p in root.children(recursive=True)}
            assert set(reaper.descendants(root.pid)) == want
            pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
            assert reaper.descendants(pid_max + 1) == []  # no such process
        finally:
            for proc in [*root.children(recursive=True), root]:
                proc.kill()
            root.wait()


async def test_children_are_waited_for_without_a_thread_each(tmp_path: Path) -> None:
    """Python 3.11's asyncio started a thread per child to wait for it; a pidfd each
    (the default from 3.12) costs none: exit codes as before, no threads meanwhile."""
    import threading

    from supervisor.process import GroupProcess

    codes: list[int] = []
    before = threading.active_count()
    async with anyio.create_task_group() as tg:

        async def one(code: int) -> None:
            async with GroupProcess(["sh", "-c", f"sleep 0.2; exit {code}"], cwd=tmp_path) as p:
                codes.append(await p.wait())

        for code in range(8):
            tg.start_soon(one, code)
        await wait_for(lambda: len(list(psutil.Process().children())) >= 8)
        threads = threading.active_count()
    assert sorted(codes) == list(range(8))
    if sys.version_info < (3, 12) and hasattr(os, "pidfd_open"):
        assert threads - before < 8  # not one per child
