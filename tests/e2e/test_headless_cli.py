"""The headless CLI as a real subprocess: plain and JSON-lines output, the summary
schema, exit codes, Ctrl-C, the no-argument fallback, `check` and `init`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    GRANDCHILD_SCRIPT,
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
    wait_gone,
    write_config,
)

TIMESTAMP = re.compile(r"^\d\d:\d\d:\d\d ")
LOOP_EVENT_TYPES = {
    "state",
    "iteration_started",
    "output",
    "usage",
    "reserved",
    "released",
    "session",
    "check_started",
    "check",
    "iteration_finished",
    "stuck",
}
SUMMARY_KEYS = {"type", "ts", "loops", "tokens", "usd", "wall_s"}
LOOP_RESULT_KEYS = {"name", "state", "iterations", "tokens", "usd", "reason"}
END_STATES = {"succeeded", "failed", "exhausted", "stopped", "paused", "stuck"}

CHECK_ANSWER = {
    "name": "answer",
    "run": [sys.executable, "-c", "import sys; sys.exit(open('answer.txt').read() != 'final')"],
}


def good_config(tmp_path: Path) -> Path:
    """Two loops that both succeed: a sim judged by a real check, a CLI agent."""
    (tmp_path / "sim").mkdir()
    (tmp_path / "cli").mkdir()
    return write_config(
        tmp_path,
        supervisor_table(tokens=50_000),
        sim_agent(
            "s",
            converge_after=2,
            draft_files={"answer.txt": "draft"},
            files={"answer.txt": "final"},
        ),
        command_agent(
            "cli", "import sys; print('working on', sys.argv[1]); print('DONE')", "$iteration"
        ),
        loop("sim-loop", "s", workspace="sim", checks=[CHECK_ANSWER], max_iterations=4),
        loop("cli-loop", "cli", workspace="cli", done_marker="DONE"),
    )


def summary_of(stdout: str) -> dict[str, Any]:
    last = json_lines(stdout)[-1]
    assert last["type"] == "summary"
    return last


# -- output formats ---------------------------------------------------------------
def test_headless_prints_timestamped_lines_and_a_summary(tmp_path: Path) -> None:
    good_config(tmp_path)
    proc = run_cli("run", "loops.toml", "--headless", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    body = lines[: lines.index("")]
    assert body
    assert all(TIMESTAMP.match(line) for line in body), body
    assert any("sim-loop" in line and "iteration 2" in line for line in body)
    assert any("cli-loop" in line and "│ stdout: working on 1" in line for line in body)
    table = lines[lines.index("") + 1 :]
    assert table[0].split() == ["loop", "state", "iter", "tokens", "usd", "reason"]
    assert table[1].split()[:3] == ["sim-loop", "succeeded", "2"]
    assert table[2].split()[:3] == ["cli-loop", "succeeded", "1"]
    assert table[3].startswith("total: ")
    assert table[3].rstrip().endswith("exit code 0")
    assert not proc.stdout.startswith("{")
    assert "\x1b[" not in proc.stdout  # no colour codes when stdout is not a terminal


def test_json_lines_schema_and_summary(tmp_path: Path) -> None:
    good_config(tmp_path)
    proc = run_cli("run", "loops.toml", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(isinstance(r, dict) for r in records)
    for record in records:
        assert isinstance(record["type"], str)
        assert isinstance(record["ts"], float | int)
        if record["type"] in LOOP_EVENT_TYPES:
            assert record["loop"] in ("sim-loop", "cli-loop"), record
    types = {r["type"] for r in records}
    assert {"run_started", "state", "iteration_started", "output", "check", "summary"} <= types
    assert records[0]["type"] == "run_started"
    assert [r["type"] for r in records].count("summary") == 1
    summary = records[-1]
    assert summary["type"] == "summary"
    assert set(summary) >= SUMMARY_KEYS
    assert [set(item) for item in summary["loops"]] == [LOOP_RESULT_KEYS] * 2
    assert [item["name"] for item in summary["loops"]] == ["sim-loop", "cli-loop"]
    assert [item["state"] for item in summary["loops"]] == ["succeeded", "succeeded"]
    assert summary["loops"][0]["iterations"] == 2
    assert summary["tokens"] == sum(item["tokens"] for item in summary["loops"]) > 0
    assert isinstance(summary["usd"], float)
    assert isinstance(summary["wall_s"], float)
    assert summary["exit_code"] == 0
    state_reasons = [r["reason"] for r in records if r["type"] == "state"]
    assert all(reason.strip() for reason in state_reasons)


# -- exit codes -------------------------------------------------------------------
def test_exit_1_when_a_loop_fails(tmp_path: Path) -> None:
    (tmp_path / "ok").mkdir()
    (tmp_path / "bad").mkdir()
    write_config(
        tmp_path,
        supervisor_table(),
        sim_agent("done", converge_after=1, done_text="DONE"),
        sim_agent("never", converge_after=99),
        loop("ok", "done", workspace="ok", done_marker="DONE"),
        loop("bad", "never", workspace="bad", done_marker="DONE", max_iterations=2),
    )
    proc = run_cli("run", "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    states = [(r["name"], r["state"]) for r in summary_of(proc.stdout)["loops"]]
    assert states == [("ok", "succeeded"), ("bad", "failed")]


def test_exit_2_when_the_global_budget_runs_out(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    write_config(
        tmp_path,
        supervisor_table(tokens=900),
        sim_agent("chatty", reply_tokens=100, converge_after=99),
        *(loop(n, "chatty", workspace=n, done_marker="DONE", max_iterations=50) for n in "abc"),
    )
    proc = run_cli("run", "loops.toml", "--json", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    summary = summary_of(proc.stdout)
    assert {r["state"] for r in summary["loops"]} == {"exhausted"}
    assert summary["tokens"] <= 900


def test_exit_3_on_a_broken_config_with_file_line_col(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        supervisor_table(),
        sim_agent("s"),
        '[[loop]]\nname = "L"\nagent = "s"\nprompt = "hi $nope"\ndone_marker = "X"\n'
        "max_iteratons = 3\n",
    )
    proc = run_cli("run", "loops.toml", "--headless", cwd=tmp_path)
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if re.match(r"^\S+:\d+:\d+: ", line)]
    assert len(errors) >= 2, proc.stderr  # all errors at once
    assert all(line.startswith("loops.toml:") for line in errors)  # the path as given
    assert any("max_iteratons" in line for line in errors)
    assert any("$nope" in line or "nope" in line for line in errors)
    check = run_cli("check", "loops.toml", cwd=tmp_path)
    assert check.returncode == 3
    assert check.stderr == proc.stderr


def test_exit_3_on_a_toml_syntax_error_and_a_missing_file(tmp_path: Path) -> None:
    write_config(tmp_path, "[supervisor\nmax_concurrent = 2\n")
    proc = run_cli("run", "--json", cwd=tmp_path)
    assert proc.returncode == 3
    assert re.match(r"^loops\.toml:1:\d+: invalid TOML", proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr
    missing = run_cli("run", "nowhere.toml", "--headless", cwd=tmp_path)
    assert missing.returncode == 3
    assert "nowhere.toml" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_exit_3_on_a_usage_error(tmp_path: Path) -> None:
    good_config(tmp_path)
    proc = run_cli("run", "loops.toml", "--no-such-flag", cwd=tmp_path)
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert "--no-such-flag" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert run_cli("--help", cwd=tmp_path).returncode == 0


def test_exit_4_when_a_loop_is_stuck(tmp_path: Path) -> None:
    (tmp_path / "ok").mkdir()
    (tmp_path / "stuck").mkdir()
    write_config(
        tmp_path,
        supervisor_table(),
        sim_agent("done", converge_after=2, done_text="DONE"),
        sim_agent("stubborn", behavior="stuck", draft_files={"answer.txt": "draft"}),
        loop("ok", "done", workspace="ok", done_marker="DONE"),
        loop(
            "stuck",
            "stubborn",
            workspace="stuck",
            checks=[CHECK_ANSWER | {"run": [PY, "-c", "print('nope'); raise SystemExit(1)"]}],
            stuck={"same_failure": 2},
        ),
    )
    proc = run_cli("run", "--json", cwd=tmp_path)
    assert proc.returncode == 4, proc.stderr
    summary = summary_of(proc.stdout)
    states = [(r["name"], r["state"]) for r in summary["loops"]]
    assert states == [("ok", "succeeded"), ("stuck", "stuck")]
    assert summary["exit_code"] == 4
    stuck_events = [r for r in json_lines(proc.stdout) if r["type"] == "stuck"]
    assert [(r["loop"], r["detector"], r["action"]) for r in stuck_events] == [
        ("stuck", "same_failure", "pause")
    ]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_mid_run_exits_130_and_leaves_no_child(
    tmp_path: Path, sig: signal.Signals
) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "sim").mkdir()
    write_config(
        tmp_path,
        supervisor_table(),
        command_agent("sleeper", GRANDCHILD_SCRIPT),
        sim_agent("slow", rate=50, reply_tokens=2000),
        loop("busy", "sleeper", workspace="busy", done_marker="DONE"),
        loop("sim", "slow", workspace="sim", done_marker="DONE"),
    )
    pids_file = tmp_path / "busy" / "pids.txt"
    proc = subprocess.Popen(
        [PY, "-m", "supervisor", "run", "loops.toml", "--json"],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while len(read_pids(pids_file)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = read_pids(pids_file)
        assert len(pids) == 2, "the command agent never started"
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert wait_gone(pids, timeout=3) == []
    summary = summary_of(stdout)
    assert summary["exit_code"] == 130
    assert {r["state"] for r in summary["loops"]} == {"stopped"}


# -- no arguments, check, init --------------------------------------------------------
def test_no_arguments_without_a_tty_runs_headless(tmp_path: Path) -> None:
    good_config(tmp_path)
    proc = run_cli(cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "exit code 0" in proc.stdout
    assert TIMESTAMP.match(proc.stdout.splitlines()[0])
    as_json = run_cli("--json", cwd=tmp_path)
    assert as_json.returncode == 0
    assert summary_of(as_json.stdout)["exit_code"] == 0


def test_check_prints_one_line_per_loop(tmp_path: Path) -> None:
    good_config(tmp_path)
    proc = run_cli("check", "loops.toml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("sim-loop ")
    assert lines[1].startswith("cli-loop ")
    assert lines[2] == "loops.toml: ok, 2 loop(s), 2 agent(s)"
    assert not (tmp_path / "sim" / "answer.txt").exists()  # check runs nothing


def test_init_writes_a_starter_that_checks_and_runs_offline(tmp_path: Path) -> None:
    init = run_cli("init", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    starter = tmp_path / "loops.toml"
    assert starter.exists()
    assert starter.read_text().lstrip().startswith("#")  # commented
    again = run_cli("init", cwd=tmp_path)
    assert again.returncode == 3
    assert "exists" in again.stderr
    check = run_cli("check", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stdout.splitlines()[-1].startswith("loops.toml: ok")
    run = run_cli("run", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    summary = summary_of(run.stdout)
    assert {r["state"] for r in summary["loops"]} == {"succeeded"}


def test_init_into_a_missing_folder_is_a_clean_error(tmp_path: Path) -> None:
    proc = run_cli("init", "no/such/dir/loops.toml", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "no/such/dir/loops.toml" in proc.stderr


STUBBORN = (
    "import os, signal, subprocess, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "child = subprocess.Popen(['python3', '-c', 'import signal, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
    "open('pids.txt', 'w').write(f'{os.getpid()} {child.pid}')\n"
    "time.sleep(60)\n"
)


def test_a_second_sigint_during_shutdown_still_leaves_no_child(tmp_path: Path) -> None:
    """An impatient second Ctrl-C while children are being killed (they ignore
    SIGTERM, so the supervisor waits its grace period before SIGKILL) must neither
    print a traceback nor orphan them."""
    (tmp_path / "busy").mkdir()
    write_config(
        tmp_path,
        supervisor_table(),
        command_agent("stubborn", STUBBORN),
        loop("busy", "stubborn", workspace="busy", done_marker="DONE"),
    )
    pids_file = tmp_path / "busy" / "pids.txt"
    proc = subprocess.Popen(
        [PY, "-m", "supervisor", "run", "--json"],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while len(read_pids(pids_file)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = read_pids(pids_file)
        assert len(pids) == 2, "the command agent never started"
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
        left = wait_gone(pids, timeout=3)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for pid in alive(read_pids(pids_file)):
            os.kill(pid, signal.SIGKILL)  # do not leak them when the test fails
    assert left == [], stderr
    assert "Traceback" not in stderr
    assert proc.returncode == 130
    assert summary_of(stdout)["exit_code"] == 130
