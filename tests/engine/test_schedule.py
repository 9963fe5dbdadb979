"""Scheduled loops: runs at each tick, ticks during a run skipped (not queued),
max_runs, per-run loop budgets, and catch-up after a restart."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest
from helpers import loop, run_recorded, sim_agent, supervisor_table, write_config

from supervisor import events as ev
from supervisor.config.load import load_config
from supervisor.schedule import Schedule

pytestmark = pytest.mark.anyio


def test_every_schedule_ticks_and_counts_skipped_ticks() -> None:
    every = Schedule.parse("every 10s")
    assert every.next_after(100.0) == 110.0
    assert every.ticks_between(100.0, 135.0) == 3
    assert every.ticks_between(100.0, 100.0) == 0


def test_cron_schedule_uses_cron_semantics() -> None:
    cron = Schedule.parse("*/15 * * * *")
    start = datetime(2026, 11, 27, 10, 7, 30).timestamp()
    assert datetime.fromtimestamp(cron.next_after(start)) == datetime(2026, 11, 27, 10, 15)
    end = datetime(2026, 11, 27, 11, 7).timestamp()
    assert cron.ticks_between(start, end) == 4  # 10:15, 10:30, 10:45, 11:00


def _config(tmp_path: Path, *, schedule: str, max_runs: int, rate: float, budget: int) -> Path:
    (tmp_path / "w").mkdir(exist_ok=True)
    return write_config(
        tmp_path,
        supervisor_table(max_concurrent=2),
        sim_agent("s", rate=rate, reply_tokens=10, converge_after=1, files={"ok.txt": "ok\n"}),
        loop(
            "tick",
            "s",
            workspace="w",
            checks=[{"run": "test -f ok.txt"}],
            schedule=schedule,
            max_runs=max_runs,
            budget={"tokens": budget},
        ),
    )


async def test_a_scheduled_loop_runs_again_until_max_runs(tmp_path: Path) -> None:
    config = load_config(
        _config(tmp_path, schedule="every 0.4s", max_runs=3, rate=0, budget=10_000),
        state_dir=tmp_path / "st",
    )
    started = time.monotonic()
    rec = await run_recorded(config, timeout=20)
    runs = rec.of(ev.ScheduledRun, "tick")
    assert [r.run for r in runs] == [1, 2, 3]
    assert time.monotonic() - started >= 0.8  # two waits for a tick
    assert "scheduled" in rec.states("tick")
    assert rec.result("tick").state == "succeeded"
    # Every run is iteration 1 again; the summary counts tokens over all runs.
    assert [e.iteration for e in rec.of(ev.IterationStarted, "tick")] == [1, 1, 1]
    per_run = sum(e.tokens for e in rec.of(ev.IterationFinished, "tick"))
    assert rec.result("tick").tokens == per_run
    assert rec.summary is not None
    assert rec.summary.exit_code == 0


async def test_loop_budget_applies_per_run(tmp_path: Path) -> None:
    """Three runs spend more than the loop's token budget in total, each less."""
    config = load_config(
        _config(tmp_path, schedule="every 0.2s", max_runs=3, rate=0, budget=40),
        state_dir=tmp_path / "st",
    )
    rec = await run_recorded(config, timeout=20)
    assert rec.result("tick").state == "succeeded"
    assert rec.result("tick").tokens > 40
    assert all(e.tokens <= 40 for e in rec.of(ev.IterationFinished, "tick"))


async def test_ticks_that_come_during_a_run_are_skipped_not_queued(tmp_path: Path) -> None:
    # Each run streams 10 tokens at 12 tokens/s (~0.8 s) while ticks come every 0.25 s.
    config = load_config(
        _config(tmp_path, schedule="every 0.25s", max_runs=2, rate=12, budget=10_000),
        state_dir=tmp_path / "st",
    )
    rec = await run_recorded(config, timeout=20)
    runs = rec.of(ev.ScheduledRun, "tick")
    assert [r.run for r in runs] == [1, 2]
    assert runs[1].skipped >= 2
    notices = [n.message for n in rec.of(ev.Notice) if n.loop == "tick"]
    assert any("skipped, not queued" in m for m in notices)
    assert len(rec.of(ev.IterationStarted, "tick")) == 2


def test_stopping_a_waiting_scheduled_loop_ends_the_headless_run(tmp_path: Path) -> None:
    """A scheduled loop keeps `run` alive between ticks; SIGINT ends it cleanly (130)."""
    import signal
    import subprocess
    import sys

    from helpers import cli_env

    cfg = _config(tmp_path, schedule="every 1h", max_runs=5, rate=0, budget=10_000)
    with subprocess.Popen(
        [sys.executable, "-m", "supervisor", "run", str(cfg), "--json"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        seen_scheduled = False
        for line in proc.stdout:
            if '"state": "scheduled"' in line:
                seen_scheduled = True
                assert "next run" in line
                break
            assert time.monotonic() < deadline
        assert seen_scheduled
        time.sleep(0.3)
        assert proc.poll() is None  # still running between ticks
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert '"type": "summary"' in out.splitlines()[-1]


def test_catch_up_once_runs_a_missed_tick_at_resume(tmp_path: Path) -> None:
    """Killed between two runs of an hourly loop whose next tick then passed: with
    catch_up = "once" the resumed run starts a run at once; with "skip" it waits."""
    import json
    import sqlite3

    for catch_up, expect_run in (("once", True), ("skip", False)):
        case = tmp_path / catch_up
        case.mkdir()
        cfg = _config(case, schedule="every 1h", max_runs=2, rate=0, budget=10_000)
        cfg.write_text(cfg.read_text() + f'catch_up = "{catch_up}"\n')
        state = case / ".loopvisor"
        import subprocess
        import sys

        from helpers import cli_env

        with subprocess.Popen(
            [sys.executable, "-m", "supervisor", "run", str(cfg), "--json"],
            cwd=case,
            env=cli_env(),
            stdout=subprocess.PIPE,
            text=True,
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                if '"state": "scheduled"' in line:
                    break
            time.sleep(0.3)  # the journal's writer commits the scheduled state
            proc.kill()
            proc.wait(timeout=10)
        # Pretend the first run started two hours ago: its next tick was missed.
        with sqlite3.connect(state / "journal.sqlite3") as conn:
            rows = conn.execute(
                "SELECT rowid, json FROM events WHERE type = 'scheduled_run'"
            ).fetchall()
            for rowid, data in rows:
                event = json.loads(data)
                event["ts"] -= 7200
                conn.execute(
                    "UPDATE events SET json = ?, ts = ? WHERE rowid = ?",
                    (json.dumps(event), event["ts"], rowid),
                )
        got_run = False
        with subprocess.Popen(
            [sys.executable, "-m", "supervisor", "run", str(cfg), "--json", "--resume"],
            cwd=case,
            env=cli_env(),
            stdout=subprocess.PIPE,
            text=True,
        ) as resumed:
            assert resumed.stdout is not None
            deadline = time.monotonic() + 20
            for line in resumed.stdout:
                data = json.loads(line)
                if data["type"] == "scheduled_run":
                    got_run = True
                    assert data["run"] == 2
                    assert data["catch_up"] is True
                if data["type"] == "state" and data["state"] == "scheduled":
                    break
                if data["type"] == "summary" or time.monotonic() > deadline:
                    break
            resumed.kill()
            resumed.wait(timeout=10)
        assert got_run is expect_run, catch_up
