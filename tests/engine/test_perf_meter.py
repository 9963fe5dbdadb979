"""CPU metering costs O(processes on the machine) per tick for the whole supervisor.

Issue 12: every loop sampled its own process tree five times a second with psutil
`children(recursive=True)`, each call a scan of all of /proc: cost = loops x processes
x 5 Hz. These tests count the /proc scans (untimed) and check what the shared sampler
(`supervisor.cpumeter`) still counts: exited descendants, the cgroup, the final sample.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from helpers import (
    Recorded,
    command_agent,
    load,
    loop,
    run_recorded,
    supervisor_table,
    table,
    wait_for,
)

from supervisor import cgroup, cpumeter, procfs
from supervisor.process import GroupProcess

pytestmark = pytest.mark.anyio

WINDOW_S = 1.0
"""How long the /proc scans are counted while every agent sleeps."""
FAST_TICK_CPU_S = 0.2 * (os.cpu_count() or 1)
"""What a group can spend on every core between two fast samples (cpumeter.FAST_S)."""


class ProcScans:
    """Counts listings of /proc (psutil's `pids()` and our own scan both list it)."""

    def __init__(self) -> None:
        self.count = 0

    def wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def counted(path: Any = ".") -> Any:
            if os.fsdecode(path) == "/proc":
                self.count += 1
            return real(path)

        return counted


@pytest.fixture
def proc_scans(monkeypatch: pytest.MonkeyPatch) -> ProcScans:
    scans = ProcScans()
    monkeypatch.setattr(os, "listdir", scans.wrap(os.listdir))
    monkeypatch.setattr(os, "scandir", scans.wrap(os.scandir))
    return scans


def _sleepers() -> int:
    me = psutil.Process()
    return sum(1 for p in me.children(recursive=True) if _is_sleep(p))


def _is_sleep(proc: psutil.Process) -> bool:
    try:
        return proc.name() == "sleep"
    except psutil.Error:
        return False


async def _scans_while_sleeping(tmp_path: Path, agents: int, scans: ProcScans) -> int:
    """/proc listings during WINDOW_S while `agents` command agents all sleep."""
    config = load(
        tmp_path,
        supervisor_table(max_concurrent=agents),
        table("agents.sleeper", kind="command", command=["sleep", "30"]),
        *(loop(f"l{i}", "sleeper", max_iterations=1, done_marker="DONE") for i in range(agents)),
    )
    counted: list[int] = []

    async def during(rec: Recorded) -> None:
        await wait_for(lambda: _sleepers() >= agents, timeout=10.0)
        before = scans.count
        await anyio.sleep(WINDOW_S)  # a measuring window, not a wait for an event
        counted.append(scans.count - before)
        for name in list(rec.supervisor.runners):
            await rec.supervisor.stop(name)

    await run_recorded(config, during=during, timeout=30.0)
    return counted[0]


async def test_proc_scans_per_second_do_not_grow_with_the_number_of_groups(
    tmp_path: Path, proc_scans: ProcScans
) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "fifty").mkdir()
    one = await _scans_while_sleeping(tmp_path / "one", 1, proc_scans)
    fifty = await _scans_while_sleeping(tmp_path / "fifty", 50, proc_scans)
    # one sampler for all groups, at 1 Hz when no CPU limit is near
    assert fifty <= max(one, 1) + 1, f"{one} /proc scans/s with 1 group, {fifty} with 50"
    assert fifty <= 1 + WINDOW_S / cpumeter.SCAN_S


def _burner(seconds: float) -> str:
    return (
        f"import time\nt = time.process_time()\nwhile time.process_time() - t < {seconds}: pass\n"
    )


async def test_exited_descendants_still_count(tmp_path: Path) -> None:
    """A child reaped by its parent counts through the parent's children_* times."""
    script = textwrap.dedent(
        f"""
        import subprocess, sys
        subprocess.run([sys.executable, "-c", {_burner(0.4)!r}], check=True)
        """
    )
    async with (
        cpumeter.shared() as meter,
        GroupProcess([sys.executable, "-c", script], cwd=tmp_path) as proc,
    ):
        await proc.wait()
        cpu = proc.sample_cpu()
    assert cpu >= 0.35
    assert meter.groups == 0  # the group left the meter when it ended


async def test_orphaned_descendants_count(tmp_path: Path) -> None:
    """A grandchild whose parent died before it: the cgroup (where there is one), or
    the last value the scan saw of it."""
    script = textwrap.dedent(
        f"""
        import os, sys
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", {_burner(1.5)!r}])
        """
    )
    async with (
        cpumeter.shared() as meter,
        GroupProcess([sys.executable, "-c", script], cwd=tmp_path) as proc,
    ):
        await proc.wait()
        orphan = meter.members(proc.pid)
        await wait_for(lambda: proc.sample_cpu() >= 1.2, timeout=10.0)
        assert orphan is not None


async def test_sample_cpu_without_a_shared_meter_still_meters(tmp_path: Path) -> None:
    """Agents and checks used outside a Supervisor (tests, tools) meter by themselves."""
    async with GroupProcess([sys.executable, "-c", _burner(0.5)], cwd=tmp_path) as proc:
        await proc.wait()
        cpu = proc.sample_cpu()
    assert cpu >= 0.3


async def test_the_meter_samples_faster_only_near_a_cpu_limit(tmp_path: Path) -> None:
    async with (
        cpumeter.shared() as meter,
        GroupProcess([sys.executable, "-c", _burner(3.0)], cwd=tmp_path) as proc,
    ):
        assert meter.interval == cpumeter.SCAN_S
        fired: list[float] = []
        proc.limit_cpu(0.6, fired.append)
        await wait_for(lambda: meter.interval == cpumeter.FAST_S, timeout=10.0)
        await wait_for(lambda: bool(fired), timeout=10.0)
        assert fired[0] >= 0.6
        # how far past: at most one fast tick of CPU on every core
        assert fired[0] <= 0.6 + cpumeter.FAST_S * (os.cpu_count() or 1) + 0.1
        await proc.kill()
    assert meter.interval == cpumeter.SCAN_S


@pytest.mark.skipif(not cgroup.available(), reason="no writable cgroup v2 here")
async def test_the_cgroup_counts_what_escaped_the_session(tmp_path: Path) -> None:
    """`setsid` leaves the session the scan attributes by; the cgroup still counts it."""
    script = textwrap.dedent(
        f"""
        import os, sys
        while "loopvisor-" not in open("/proc/self/cgroup").read():  # adopted yet?
            pass
        if os.fork() == 0:
            os.setsid()
            os.execv(sys.executable, [sys.executable, "-c", {_burner(0.5)!r}])
        """
    )
    argv = [sys.executable, "-c", script]
    async with cpumeter.shared(), GroupProcess(argv, cwd=tmp_path) as proc:
        await proc.wait()  # the escaper burns on, in its own session, orphaned
        await wait_for(lambda: proc.sample_cpu() >= 0.45, timeout=10.0)


async def test_a_turn_is_killed_soon_after_it_spends_the_cpu_budget(tmp_path: Path) -> None:
    """A command agent's CPU used to be booked only when its turn ended: a loop with
    a 0.5 s CPU budget could burn for the whole turn. Now the sampler kills it."""
    config = load(
        tmp_path,
        supervisor_table(),
        command_agent("burner", _burner(4.0)),
        loop("L", "burner", done_marker="DONE", max_iterations=3, budget={"cpu": "500ms"}),
    )
    rec = await run_recorded(config, timeout=30.0)
    assert rec.summary is not None
    [result] = rec.summary.loops
    assert result.state == "exhausted", result
    spent = rec.supervisor.runners["L"].ledger.cpu_spent
    # booked: what the group had spent when seen over (<= one fast tick per core past)
    assert 0.5 <= spent <= 0.5 + FAST_TICK_CPU_S + 0.3, spent
    assert "CPU budget crossed mid-turn" in result.reason, result


async def test_without_a_cgroup_a_short_command_is_still_metered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no cgroup can be had, the known members are re-read every FAST_S between
    the 1 Hz scans: a command shorter than a scan interval is not metered as 0."""
    monkeypatch.setattr(cgroup.GroupCgroup, "create", classmethod(lambda cls, d=None: None))
    started = time.monotonic()
    async with (
        cpumeter.shared() as meter,
        GroupProcess([sys.executable, "-c", _burner(0.6)], cwd=tmp_path) as proc,
    ):
        assert proc._cgroup is None
        await proc.wait()
        cpu = proc.sample_cpu()
        elapsed = time.monotonic() - started
    # the last re-read was at most FAST_S before it exited (more on a loaded machine)
    assert cpu >= 0.3, cpu
    assert meter.scans <= 2 + elapsed / cpumeter.SCAN_S  # re-reads, not scans, between


def test_one_tick_reads_each_process_once_however_many_groups(
    proc_scans: ProcScans, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per tick: one listing of /proc and one `stat` read per process on the machine,
    with 1 group as with 50 (the old per-group sampling: one full scan per group)."""
    sleepers = [
        subprocess.Popen(["sleep", "30"], start_new_session=True, stdin=subprocess.DEVNULL)
        for _ in range(50)
    ]
    reads: list[str] = []
    real_open = open

    def counting_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(path, str) and path.startswith("/proc/") and path.endswith("/stat"):
            reads.append(path)
        return real_open(path, *args, **kwargs)

    try:
        monkeypatch.setattr("builtins.open", counting_open)
        per_tick: dict[int, tuple[int, int]] = {}
        for groups in (1, 50):
            meter = cpumeter.CpuMeter()
            for child in sleepers[:groups]:
                meter.add(child.pid)
            scans_before, reads_before = proc_scans.count, len(reads)
            processes = len(os.listdir("/proc"))  # counted too: subtracted below
            meter.tick()
            per_tick[groups] = (proc_scans.count - scans_before - 1, len(reads) - reads_before)
            assert per_tick[groups][1] <= processes
            assert meter.members(sleepers[0].pid) == {sleepers[0].pid}
        assert per_tick[1][0] == per_tick[50][0] == 1
        assert abs(per_tick[50][1] - per_tick[1][1]) <= 5  # processes come and go
    finally:
        monkeypatch.undo()
        for child in sleepers:
            child.kill()
            child.wait()


def test_between_scans_only_groups_without_a_cgroup_are_re_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cgroup's cpu.stat counts its dead too: between two scans the meter re-reads
    the members of groups without one (their last moments), and of groups near a limit."""
    sleepers = [subprocess.Popen(["sleep", "30"], start_new_session=True) for _ in range(4)]
    try:
        stat = tmp_path / "cpu.stat"
        stat.write_text("usage_usec 1000\n")
        meter = cpumeter.CpuMeter()
        for proc in sleepers[:3]:
            meter.add(proc.pid, tmp_path)  # (cpu.stat in tmp_path: a cgroup of sorts)
        meter.add(sleepers[3].pid)
        reads: list[str] = []
        real = procfs.read

        def counted(path: str) -> bytes:
            reads.append(path)
            return real(path)

        monkeypatch.setattr(procfs, "read", counted)
        meter.refresh_known()
        assert reads == [f"/proc/{sleepers[3].pid}/stat"]
        reads.clear()
        meter.limit(sleepers[0].pid, 0.5, lambda _: None)  # near its limit: re-read too
        reads.clear()
        meter.refresh_known()
        assert sorted(reads) == sorted(
            [f"/proc/{sleepers[0].pid}/stat", str(stat), f"/proc/{sleepers[3].pid}/stat"]
        )
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()
