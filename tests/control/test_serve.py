"""`loopvisor serve / ctl / attach` as real processes: a detached daemon of sim loops in
tmp_path, driven by `ctl` subprocesses, by an in-process RemoteSupervisor and by
signals. Every daemon is killed (with its process group and descendants) on teardown.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from daemon import (
    Daemon,
    kill_daemon,
    lv,
    poll,
    serve_foreground,
    sim_loops_toml,
    start_daemon,
)
from helpers import alive, command_agent, loop, supervisor_table, wait_gone

from supervisor import events as ev
from supervisor.cli.console import attach_options
from supervisor.control.client import RemoteSupervisor


def test_detached_serve_answers_status_and_pause(daemon: Daemon) -> None:
    assert alive([daemon.pid])
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.state.stat().st_mode) == 0o700
    status = daemon.status()
    assert [x["name"] for x in status["loops"]] == ["l0", "l1"]
    assert status["finished"] is False

    r = daemon.ctl("pause", "l0")
    assert r.returncode == 0, r.stderr
    poll(lambda: daemon.loop("l0")["state"] == "paused", what="l0 paused")
    assert daemon.loop("l1")["state"] != "paused"
    table = daemon.ctl("status").stdout
    assert any(line.startswith("l0") and "paused" in line for line in table.splitlines())

    assert daemon.ctl("resume", "l0").returncode == 0
    poll(lambda: daemon.loop("l0")["state"] != "paused", what="l0 resumed")

    refused = daemon.ctl("pause", "nope")
    assert refused.returncode == 1
    assert "no loop named 'nope'" in refused.stderr


def test_ctl_with_nobody_serving_exits_3_with_a_clear_message(tmp_path: Path) -> None:
    state = tmp_path / "state"
    r = lv("ctl", "status", "--state-dir", state, cwd=tmp_path)
    assert r.returncode == 3
    assert f"no loopvisor is serving {state} (no socket at {state}/control.sock)" in r.stderr
    r = lv("ctl", "status", "--json", "--state-dir", state, cwd=tmp_path)
    assert r.returncode == 3
    assert json.loads(r.stdout) | {"error": ""} == {
        "ok": False,
        "error": "",
        "kind": "not_serving",
        "exit_code": 3,
    }
    r = lv("attach", "--state-dir", state, cwd=tmp_path)
    assert r.returncode == 3
    assert "no loopvisor is serving" in r.stderr

    # default: the state dir of ./loops.toml, found even when the file is broken
    (tmp_path / "loops.toml").write_text('[supervisor]\nstate_dir = "st"\n[[loop]\n')
    r = lv("ctl", "pause", cwd=tmp_path)
    assert r.returncode == 3
    assert f"no socket at {tmp_path / 'st' / 'control.sock'}" in r.stderr

    state.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(state / "control.sock"))
    stale.close()  # left behind by a kill -9
    r = lv("ctl", "status", "--state-dir", state, cwd=tmp_path)
    assert r.returncode == 3
    assert "stale socket" in r.stderr


@pytest.mark.anyio
async def test_remote_supervisor_drives_a_served_process(daemon: Daemon) -> None:
    async with RemoteSupervisor(daemon.socket) as remote:
        assert remote.hello["pid"] == daemon.pid
        snap = await remote.snapshot()
        assert {x.name for x in snap.loops} == {"l0", "l1"}
        async with remote.subscribe() as events:
            await remote.inject("l0", "mind the edge cases")
            await remote.edit("l0", max_iterations=321)
            seen: set[str] = set()
            with anyio.fail_after(15):
                async for event in events:
                    if isinstance(event, ev.ControlApplied):
                        seen.add(event.op)
                    if isinstance(event, ev.AgentOutput) and event.loop == "l0":
                        seen.add("output")
                    if {"inject", "edit", "output"} <= seen:
                        break
        snap = await remote.snapshot()
        assert next(x for x in snap.loops if x.name == "l0").max_iterations == 321
        assert await remote.transcript("l0", limit=3)


def test_sigkilled_subscriber_mid_stream_leaves_the_server_running(
    daemon: Daemon, tmp_path: Path
) -> None:
    out = tmp_path / "tail.out"
    with out.open("w") as sink:
        client = daemon.spawn_ctl("tail", "l0", stdout=sink, stderr=subprocess.STDOUT)
    try:
        poll(lambda: out.read_text().count("━━ iteration") >= 2, timeout=15, what="tail output")
    finally:
        client.kill()  # SIGKILL while subscribed and streaming
        client.wait(timeout=5)
    before = daemon.loop("l0")["iteration"]
    poll(lambda: daemon.loop("l0")["iteration"] >= before + 2, what="l0 progressing")
    assert daemon.status()["loops"][1]["state"] in ("running", "pending", "checking")
    assert "Traceback" not in daemon.log


def test_sighup_reloads_a_good_config_and_keeps_the_old_on_a_broken_one(daemon: Daemon) -> None:
    daemon.config.write_text(
        sim_loops_toml(loop("l2", "slow", done_marker="X"), max_iterations=4242),
        encoding="utf-8",
    )
    os.kill(daemon.pid, signal.SIGHUP)
    poll(lambda: daemon.loop("l0")["max_iterations"] == 4242, what="reloaded max_iterations")
    assert daemon.loop("l1")["max_iterations"] == 4242
    poll(lambda: "max_iterations 100000 → 4242" in daemon.log, what="reload logged")
    assert "l2: new loop; starts after a restart of serve" in daemon.log

    daemon.config.write_text(sim_loops_toml(max_iterations=7) + "\n[[loop]\n", encoding="utf-8")
    os.kill(daemon.pid, signal.SIGHUP)
    poll(lambda: "reload rejected, old config kept" in daemon.log, what="rejection logged")
    assert "loops.toml:" in daemon.log.split("reload rejected")[-1]  # FILE:LINE:COL
    assert daemon.loop("l0")["max_iterations"] == 4242
    before = daemon.loop("l0")["iteration"]
    poll(lambda: daemon.loop("l0")["iteration"] > before, what="l0 still running")

    r = daemon.ctl("reload")  # the same through the socket: exit 3 and the error
    assert r.returncode == 3
    assert "invalid TOML" in r.stderr


def test_sigterm_stops_everything_and_leaves_no_children(tmp_path: Path) -> None:
    sleeper = "import time; print('working', flush=True); time.sleep(120)"
    toml = "\n".join(
        [
            supervisor_table(4),
            command_agent("sleepy", sleeper),
            loop("busy", "sleepy", max_iterations=5, done_marker="NEVER-SAID"),
        ]
    )
    d = start_daemon(tmp_path, toml)
    try:
        kids = poll(lambda: psutil.Process(d.pid).children(recursive=True), what="an agent process")
        kid_pids = [k.pid for k in kids]
        os.kill(d.pid, signal.SIGTERM)
        assert wait_gone([d.pid], timeout=20) == []
        assert wait_gone(kid_pids, timeout=5) == [], "agent processes outlived serve"
        assert not d.socket.exists()
        assert not (d.state / "serve.pid").exists()
        log = d.log
        assert "shutting down: signal SIGTERM" in log
        assert "total:" in log  # the run summary
        summary = log.split("reason\n")[-1]
        assert any(x.startswith("busy") and "stopped" in x for x in summary.splitlines())
        assert (d.state / "journal.sqlite3").exists()
    finally:
        kill_daemon(d.pid)


def test_ctl_shutdown_prints_the_summary_and_the_daemon_exits(daemon: Daemon) -> None:
    r = daemon.ctl("shutdown")
    assert r.returncode == 0, r.stderr
    assert "total:" in r.stdout
    assert any(line.startswith("l0") for line in r.stdout.splitlines())
    assert wait_gone([daemon.pid], timeout=15) == []
    assert not daemon.socket.exists()
    assert daemon.ctl("status").returncode == 3


def test_serve_outlives_a_run_that_ended_on_its_own(tmp_path: Path) -> None:
    """The global wall budget ends the run; serve keeps answering until shutdown."""
    d = start_daemon(tmp_path, sim_loops_toml(wall="1s"))
    try:
        poll(lambda: d.status()["finished"], timeout=15, what="the run to end")
        assert {x["state"] for x in d.status()["loops"]} == {"exhausted"}
        assert "still serving until shutdown" in d.log
        r = d.ctl("shutdown")
        assert r.returncode == 0, r.stderr
        assert "has shut down" in r.stdout
        assert wait_gone([d.pid], timeout=15) == []
    finally:
        kill_daemon(d.pid)


def test_serve_resume_continues_a_run_after_kill_9(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, sim_loops_toml())
    try:
        poll(lambda: d.loop("l0")["iteration"] >= 3, what="some iterations")
        before = d.status()
        os.kill(d.pid, signal.SIGKILL)  # a crash: stale socket and PID file stay behind
        assert wait_gone([d.pid], timeout=10) == []
        assert d.socket.exists()
    finally:
        kill_daemon(d.pid)
    resumed = d.resume()
    pid = resumed.pid
    try:
        after = resumed.status()
        assert after["run_id"] == before["run_id"]
        it = {x["name"]: x["iteration"] for x in before["loops"]}
        assert all(x["iteration"] >= it[x["name"]] - 1 for x in after["loops"])
        assert "(resumed)" in d.log
    finally:
        kill_daemon(pid)


def test_detach_refuses_a_bad_config_and_a_second_server(daemon: Daemon, tmp_path: Path) -> None:
    again = lv("serve", daemon.config, "--state-dir", daemon.state, "--detach", cwd=tmp_path)
    assert again.returncode == 3
    assert f"another loopvisor (pid {daemon.pid})" in again.stderr

    bad = tmp_path / "bad.toml"
    bad.write_text("[[loop]]\nname = 1\n", encoding="utf-8")
    r = lv("serve", bad, "--state-dir", tmp_path / "other", "--detach", cwd=tmp_path)
    assert r.returncode == 3
    assert "bad.toml:" in r.stderr
    assert not (tmp_path / "other" / "control.sock").exists()


def test_ctl_tail_prints_history_then_follows(daemon: Daemon, tmp_path: Path) -> None:
    poll(lambda: daemon.loop("l0")["iteration"] >= 3, what="some history")
    proc = daemon.spawn_ctl(
        "tail", "l0", "--lines", "4", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # until the history and live lines after it have come
            lines.append(line.rstrip("\n"))
            headers = [x for x in lines if x.startswith("━━ iteration")]
            if len(lines) > 4 and len(headers) >= 3:
                break
        proc.send_signal(signal.SIGINT)
        out, _err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    lines += out.splitlines()
    out = "\n".join(lines)
    assert len(lines) > 4, "history, then live lines"
    numbers = [int(x.split()[2]) for x in lines if x.startswith("━━ iteration")]
    assert len(numbers) >= 3
    assert numbers == sorted(numbers)
    assert "operator" not in out  # only l0's own transcript, not control chatter


def test_ctl_edit_inject_and_usage_errors(daemon: Daemon, tmp_path: Path) -> None:
    r = daemon.ctl("edit", "l0", "--max-iterations", "999", "--tokens", "123456", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"] is True
    l0 = daemon.loop("l0")
    assert (l0["max_iterations"], l0["limits"]["tokens"]) == (999, 123456)
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("New plan, iteration $iteration.", encoding="utf-8")
    assert daemon.ctl("edit", "l0", "--prompt-file", str(prompt)).returncode == 0
    assert daemon.loop("l0")["prompt"] == "New plan, iteration $iteration."
    bad = daemon.ctl("edit", "l0", "--prompt", "uses $nonsense")
    assert bad.returncode == 1
    assert "nonsense" in bad.stderr

    assert daemon.ctl("inject", "l0", "look at the parser").returncode == 0
    r = daemon.ctl("stop")
    assert r.returncode == 3
    assert "--all" in r.stderr
    assert daemon.ctl("edit", "l0").returncode == 3


def test_foreground_serve_notifies_systemd_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "loops.toml"
    config.write_text(sim_loops_toml(), encoding="utf-8")
    state = tmp_path / "fg"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(20)
    proc = serve_foreground(
        config, state, cwd=tmp_path, NOTIFY_SOCKET=str(tmp_path / "notify.sock")
    )
    try:
        assert notify.recv(100) == b"READY=1"  # sent once the socket answers
        assert (state / "control.sock").exists()
        assert int((state / "serve.pid").read_text()) == proc.pid
        r = lv("ctl", "status", "--json", "--state-dir", state, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert notify.recv(100) == b"STOPPING=1"
        assert "run " in out  # the event log goes to stdout
        assert "total:" in out
        assert "shutting down: signal SIGTERM" in err
        assert not (state / "control.sock").exists()
    finally:
        notify.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.mark.anyio
async def test_attach_shows_the_live_run_and_q_detaches(daemon: Daemon) -> None:
    """A Pilot-driven TUI fed by RemoteSupervisor shows the served loops; `q` detaches
    and leaves the supervisor running."""
    from textual.widgets import DataTable

    from tui.app import LoopvisorApp

    def iteration(app: Any, name: str) -> int:
        snap = app.snapshot
        return -1 if snap is None else next(x.iteration for x in snap.loops if x.name == name)

    async with RemoteSupervisor(daemon.socket) as remote:
        app = LoopvisorApp(remote, **attach_options(remote))
        async with app.run_test(size=(120, 32)) as pilot:
            table = app.screen.query_one("#loops", DataTable)
            with anyio.fail_after(15):
                while {k.value for k in table.rows} != {"l0", "l1"}:
                    await pilot.pause(0.1)
                first = iteration(app, "l0")
                while iteration(app, "l0") < first + 2:  # the run is live on screen
                    await pilot.pause(0.1)
            assert "l0" in app.export_screenshot()
            await pilot.press("q")
            await pilot.pause(0.2)
        assert app.return_code == 0
    before = daemon.loop("l0")["iteration"]
    poll(lambda: daemon.loop("l0")["iteration"] > before, what="loops still running")
