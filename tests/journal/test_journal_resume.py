"""Resume from the journal: an unfinished run is found, its in-flight iteration rerun
(marked interrupted), open reservations settled once (charged at the reservation, or
up to it where usage was seen), and the same for a real supervisor killed with kill -9
mid iteration (journals written by hand: tests/journal_support.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from journal_support import CONFIG, ledger_rows, open_run, record_iteration

from supervisor import events as ev
from supervisor.journal.reader import JournalReader
from supervisor.journal.schema import JOURNAL_NAME
from supervisor.journal.writer import Journal, JournalError


# -- resume --------------------------------------------------------------------------
def test_unfinished_run_is_found_and_finished_one_is_not(tmp_path: Path) -> None:
    journal = open_run(tmp_path, "done")
    record_iteration(journal, "a", 1, outcome="succeeded")
    journal.record(ev.LoopStateChanged(loop="a", state="succeeded", reason="ok"))
    journal.finish_run("done", 0, "")
    assert journal.find_resumable_run() is None
    journal.start_run("paused", tmp_path / "loops.toml", CONFIG)
    journal.record(ev.LoopStateChanged(loop="a", state="paused", reason="operator"))
    journal.finish_run("paused", 4, "a loop needs attention")
    assert journal.find_resumable_run() == "paused"
    journal.start_run("crashed", tmp_path / "loops.toml", CONFIG)
    journal.close()  # no finish_run: as after a crash
    journal = Journal.open(tmp_path)
    assert journal.find_resumable_run() == "crashed"
    with pytest.raises(JournalError, match="already exists"):
        journal.start_run("crashed", tmp_path / "loops.toml", CONFIG)
    journal.close()


def test_resume_reruns_the_in_flight_iteration_marked_interrupted(tmp_path: Path) -> None:
    journal = open_run(tmp_path)
    record_iteration(journal, "a", 1)
    record_iteration(journal, "a", 2, outcome=None, text="partial ", release=True)
    journal.close()  # crash: iteration 2 never finished

    with JournalReader(tmp_path) as reader:  # no supervisor alive: reads as interrupted
        assert [r.outcome for r in reader.loop_iterations("a")] == ["continue", "interrupted"]

    journal = Journal.open(tmp_path)
    resume = journal.load_resume("run-1")
    loop = resume.loops["a"]
    assert (loop.next_iteration, loop.interrupted_iteration) == (2, 2)
    assert (loop.session_id, loop.check_output) == ("sess-2", "check 2")
    assert loop.conversation == [{"role": "user", "content": "prompt 2"}]
    assert loop.tokens == 200
    assert loop.charged_at_reservation == 0
    assert any("iteration 2 was interrupted" in note for note in resume.notes)
    journal.mark_resumed("run-1")
    record_iteration(journal, "a", 2, outcome="succeeded", text="again\n")
    journal.finish_run("run-1", 0)
    journal.close()

    with JournalReader(tmp_path) as reader:
        rows = reader.loop_iterations("a")
        assert [(r.iteration, r.attempt, r.outcome) for r in rows] == [
            (1, 1, "continue"),
            (2, 1, "interrupted"),
            (2, 2, "succeeded"),
        ]
        assert rows[1].tokens == 100
        detail = reader.iteration_detail("a", 2)
        assert detail.prompt == "prompt 2"
        assert detail.transcript.index("partial") < detail.transcript.index("interrupted")
        assert detail.transcript.index("interrupted") < detail.transcript.index("again")
        items = reader.history_json("a")["iterations"]
        assert [i["outcome"] for i in items] == ["continue", "interrupted", "succeeded"]


def test_open_reservation_without_usage_is_charged_once(tmp_path: Path) -> None:
    journal = open_run(tmp_path)
    record_iteration(journal, "a", 1)  # 100 tokens used and settled
    record_iteration(journal, "a", 2, outcome=None, reserve=8000, usage=False, release=False)
    journal.close()  # crash with 8,000 tokens reserved, no usage seen

    journal = Journal.open(tmp_path)
    first = journal.load_resume("run-1")
    assert first.loops["a"].charged_at_reservation == 8000
    assert first.loops["a"].tokens == 100 + 8000
    assert first.tokens == 8100
    assert first.usd == pytest.approx(0.001 + 0.01)
    assert any(
        "8,000 tokens" in note and "charged at the reservation" in note for note in first.notes
    )
    second = journal.load_resume("run-1")
    assert second.loops["a"].tokens == 8100
    assert [k for k, _, s in ledger_rows(tmp_path) if s is not None] == ["charge", "release"]

    # The resumed run crashes again, mid-iteration with its own reservation settled.
    journal.mark_resumed("run-1")
    record_iteration(journal, "a", 2, outcome=None, reserve=500, tokens=50)
    journal.close()
    journal = Journal.open(tmp_path)
    third = journal.load_resume("run-1")
    assert third.loops["a"].tokens == 100 + 8000 + 50
    assert third.loops["a"].charged_at_reservation == 8000
    assert third.loops["a"].next_iteration == 2
    journal.close()
    with JournalReader(tmp_path) as reader:
        outcomes = [(r.iteration, r.outcome, r.tokens) for r in reader.loop_iterations("a")]
    assert outcomes == [(1, "continue", 100), (2, "interrupted", 8000), (2, "interrupted", 50)]


def test_usage_seen_with_open_reservation_is_charged_up_to_the_reservation_once(
    tmp_path: Path,
) -> None:
    """The request's end was never journalled: what was seen is charged once and the
    unseen rest at the reservation, so a crash can never under-charge a request."""
    journal = open_run(tmp_path)
    record_iteration(
        journal, "a", 1, outcome=None, reserve=8000, tokens=300, usage=True, release=False
    )
    journal.close()
    journal = Journal.open(tmp_path)
    for _ in range(2):
        resume = journal.load_resume("run-1")
        assert resume.loops["a"].tokens == 8000
        assert resume.loops["a"].charged_at_reservation == 7700
        assert resume.usd == pytest.approx(0.01)
    settled = [(k, t) for k, t, s in ledger_rows(tmp_path) if s is not None]
    assert settled == [("charge", 7700), ("release", 0)]
    journal.close()


def test_retryable_error_reruns_the_same_iteration(tmp_path: Path) -> None:
    journal = open_run(tmp_path)
    record_iteration(journal, "a", 1)
    record_iteration(journal, "a", 2, outcome="error")
    journal.record(ev.LoopStateChanged(loop="a", state="waiting", reason="retry 1/3"))
    journal.close()
    journal = Journal.open(tmp_path)
    loop = journal.load_resume("run-1").loops["a"]
    assert (loop.next_iteration, loop.retries_used, loop.interrupted_iteration) == (2, 1, None)
    assert (loop.state, loop.reason) == ("waiting", "retry 1/3")
    journal.close()


def test_restart_and_scheduled_runs_count_iterations_anew(tmp_path: Path) -> None:
    journal = open_run(tmp_path, loops=("a", "s"))
    record_iteration(journal, "a", 1)
    record_iteration(journal, "a", 2, outcome="error")
    journal.record(ev.ControlApplied(op="restart", loop="a"))
    record_iteration(journal, "a", 1)
    scheduled_run = {"type": "scheduled_run", "loop": "s", "run": 3, "ts": 1234.5}
    record_iteration(journal, "s", 1)
    journal.flush_now()
    with sqlite3.connect(tmp_path / JOURNAL_NAME) as conn:  # the schedule owner's event
        conn.execute(
            "INSERT INTO events (run_id, loop, ts, type, json) VALUES ('run-1', 's', ?, ?, ?)",
            (1234.5, "scheduled_run", json.dumps(scheduled_run)),
        )
    journal.close()
    journal = Journal.open(tmp_path)
    resume = journal.load_resume("run-1")
    a, s = resume.loops["a"], resume.loops["s"]
    assert (a.next_iteration, a.retries_used, a.tokens) == (2, 0, 300)
    assert (s.next_iteration, s.runs, s.last_run_at, s.session_id) == (1, 3, 1234.5, None)
    journal.close()


def test_mark_resumed_reopens_the_run_and_records_a_changed_config(tmp_path: Path) -> None:
    journal = open_run(tmp_path)
    record_iteration(journal, "a", 1)
    journal.finish_run("run-1", 4, "paused")
    assert journal.mark_resumed("run-1", config_text=CONFIG) is False
    assert journal.mark_resumed("run-1", config_path=tmp_path / "new.toml", config_text="x") is True
    journal.close()
    with JournalReader(tmp_path) as reader:
        run = reader.run("run-1")
        assert (run.ended, run.exit_code, run.config_path) == (
            None,
            None,
            str(tmp_path / "new.toml"),
        )
    with sqlite3.connect(tmp_path / JOURNAL_NAME) as conn:
        assert conn.execute("SELECT config_changed FROM resumes ORDER BY id").fetchall() == [
            (0,),
            (1,),
        ]
        (notice,) = conn.execute("SELECT json FROM events WHERE type = 'notice'").fetchone()
    assert "loops.toml changed" in json.loads(notice)["message"]


def test_load_resume_of_an_unknown_run_is_an_error(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    with pytest.raises(JournalError, match="no run 'nope'"):
        journal.load_resume("nope")
    journal.close()


# -- a real supervisor killed mid iteration ------------------------------------------
_SUPERVISOR = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import anyio
    from supervisor.config.load import load_config
    from supervisor.journal.writer import Journal
    from supervisor.runtime import Supervisor

    async def main() -> None:
        config = load_config(Path(sys.argv[1]))
        journal = Journal.open(config.supervisor.state_dir)
        sup = Supervisor(config, run_id="killed")
        journal.start_run(sup.run_id, config.path, config.path.read_text(), loops=config.loops)
        sup.add_sink(journal.record)
        async with anyio.create_task_group() as tg:
            tg.start_soon(journal.run_writer)
            await sup.run()
            tg.cancel_scope.cancel()

    anyio.run(main)
    """
)


def _streaming_iteration_2(state: Path) -> bool:
    if not (state / JOURNAL_NAME).exists():
        return False
    errors = (JournalError, sqlite3.OperationalError)
    with contextlib.suppress(*errors), JournalReader(state) as reader:
        rows = reader.loop_iterations("a")
        return len(rows) >= 2 and reader.iteration_detail("a", 2).transcript.count(" ") > 20
    return False


def test_kill_9_of_a_real_supervisor_mid_iteration_resumes_that_iteration(
    tmp_path: Path,
) -> None:
    from helpers import loop, sim_agent, supervisor_table, write_config

    (tmp_path / "a").mkdir()
    config_path = write_config(
        tmp_path,
        supervisor_table(max_concurrent=1),
        sim_agent("slow", rate=400, reply_tokens=400, converge_after=99, done_text="DONE"),
        loop("a", "slow", workspace="a", done_marker="DONE", max_iterations=9),
    )
    text = config_path.read_text().replace(
        "[supervisor]\n", f"[supervisor]\nstate_dir = {json.dumps(str(tmp_path / 'st'))}\n", 1
    )
    config_path.write_text(text)
    state = tmp_path / "st"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SUPERVISOR, str(config_path)], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until iteration 2 has streamed some text
            time.sleep(0.05)
            if _streaming_iteration_2(state):
                break
        else:
            pytest.fail("the supervisor did not reach iteration 2")
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    journal = Journal.open(state)
    assert journal.find_resumable_run() == "killed"
    with sqlite3.connect(state / JOURNAL_NAME) as conn:
        usage = 0
        for (t,) in conn.execute("SELECT json FROM events WHERE type = 'usage'"):
            event = ev.event_from_dict(json.loads(t))
            assert isinstance(event, ev.UsageCharged)
            usage += event.tokens
    first = journal.load_resume("killed")
    again = journal.load_resume("killed")
    journal.close()
    a = first.loops["a"]
    assert a.next_iteration == a.interrupted_iteration == 2
    # Usage streamed before the kill is charged once, the unseen rest of the open
    # reservation on top: never less than what the agent reported.
    assert a.tokens == usage + a.charged_at_reservation
    assert a.charged_at_reservation > 0
    assert again == first
    with JournalReader(state) as reader:
        rows = reader.loop_iterations("a")
        assert [(r.iteration, r.outcome) for r in rows] == [(1, "continue"), (2, "interrupted")]
        assert reader.iteration_detail("a", 2).transcript.count(" ") > 20  # partial text kept
    settled = [k for k, _, s in ledger_rows(state) if s is not None]
    assert settled == ["charge", "release"]
