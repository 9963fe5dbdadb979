"""The SQLite journal: batching, readers, schema versions, crash safety and resume."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest

from supervisor import events as ev
from supervisor.journal.reader import JournalReader
from supervisor.journal.render import (
    format_history,
    format_iteration,
    format_runs,
    format_status,
)
from supervisor.journal.schema import JOURNAL_NAME, MIGRATIONS, SCHEMA_VERSION
from supervisor.journal.statelock import StateLock
from supervisor.journal.writer import Journal, JournalError
from supervisor.spec import LoopSpec

CONFIG = '[[loop]]\nname = "a"\n'


def _open_run(state: Path, run_id: str = "run-1", loops: tuple[str, ...] = ("a",)) -> Journal:
    journal = Journal.open(state)
    specs = [LoopSpec(name=n, agent="sim", prompt="p", workspace=state) for n in loops]
    journal.start_run(run_id, state / "loops.toml", CONFIG, loops=specs)
    journal.record(ev.RunStarted(run_id=run_id, config="loops.toml", loops=loops))
    return journal


def _iteration(
    journal: Journal,
    loop: str,
    n: int,
    *,
    outcome: ev.IterationOutcome | None = "continue",
    text: str = "hello world\n",
    tokens: int = 100,
    reserve: int | None = 1000,
    usage: bool = True,
    release: bool = True,
) -> None:
    """The events `loop.py` emits for one iteration; outcome None stops mid-iteration."""
    journal.record(ev.IterationStarted(loop=loop, iteration=n, prompt=f"prompt {n}"))
    journal.record(ev.LoopStateChanged(loop=loop, state="running", reason="turn", iteration=n))
    if reserve is not None:
        journal.record(ev.BudgetReserved(loop=loop, iteration=n, tokens=reserve, usd=0.01))
    for ch in text:
        journal.record(ev.AgentOutput(loop=loop, iteration=n, text=ch))
    if usage:
        journal.record(
            ev.UsageCharged(
                loop=loop, iteration=n, input_tokens=tokens - 10, output_tokens=10, usd=0.001
            )
        )
    if release and reserve is not None:
        journal.record(
            ev.BudgetReleased(
                loop=loop, iteration=n, tokens=reserve - (tokens if usage else 0), usd=0.009
            )
        )
    journal.record(
        ev.SessionSaved(
            loop=loop,
            iteration=n,
            session_id=f"sess-{n}",
            conversation=[{"role": "user", "content": f"prompt {n}"}],
            last_output=text,
            check_output=f"check {n}",
        )
    )
    if outcome is None:
        return
    journal.record(ev.CheckStarted(loop=loop, iteration=n, name="pytest", command="pytest -q"))
    journal.record(
        ev.CheckFinished(
            loop=loop,
            iteration=n,
            name="pytest",
            passed=outcome == "succeeded",
            exit_code=0 if outcome == "succeeded" else 1,
            summary="1 failed" if outcome != "succeeded" else "3 passed",
            output="F..",
            duration_s=0.1,
        )
    )
    journal.record(
        ev.IterationFinished(
            loop=loop,
            iteration=n,
            outcome=outcome,
            reason=f"reason {n}",
            tokens=tokens if usage else 0,
            usd=0.001 if usage else 0.0,
            duration_s=0.5,
            session_id=f"sess-{n}",
        )
    )


def _ledger(state: Path) -> list[tuple[str, int, int | None]]:
    with sqlite3.connect(state / JOURNAL_NAME) as conn:
        rows = conn.execute("SELECT kind, tokens, settles FROM ledger ORDER BY id").fetchall()
    return [(str(k), int(t), s) for k, t, s in rows]


# -- writing and reading ---------------------------------------------------------
@pytest.mark.anyio
async def test_round_trip_through_the_writer_task(tmp_path: Path) -> None:
    journal = _open_run(tmp_path, loops=("a", "b"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(journal.run_writer, 0.01)
        _iteration(journal, "a", 1)
        tool_in = {"path": "x.py"}
        journal.record(
            ev.ToolCalled(loop="b", iteration=1, tool_id="t1", name="read", input=tool_in)
        )
        await anyio.sleep(0.05)
        _iteration(journal, "a", 2, outcome="succeeded", text="done\n")
        journal.record(ev.LoopStateChanged(loop="a", state="succeeded", reason="checks passed"))
        await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    journal.finish_run("run-1", 0, "all succeeded")
    stats = journal.statistics()
    assert stats.pending_events == 0
    assert stats.batches_written >= 2
    journal.close()

    with JournalReader(tmp_path) as reader:
        (run,) = reader.runs()
        assert (run.run_id, run.exit_code, run.live, run.loops) == ("run-1", 0, False, ("a", "b"))
        assert run.tokens == 200
        rows = reader.loop_iterations("a")
        assert [(r.iteration, r.attempt, r.outcome, r.tokens) for r in rows] == [
            (1, 1, "continue", 100),
            (2, 1, "succeeded", 100),
        ]
        prompt, transcript = reader.iteration_detail("a", 2)
        assert prompt == "prompt 2"
        assert transcript.index("done") < transcript.index("$ pytest -q")
        assert transcript.index("$ pytest -q") < transcript.index("✓ check pytest: 3 passed")
        assert "── iteration 2: succeeded" in transcript
        lines = reader.transcript("a")
        assert "hello world" in lines
        assert "done" in lines
        assert lines.index("hello world") < lines.index("done")
        status = {r.loop: r for r in reader.status()}
        assert (status["a"].state, status["a"].iteration, status["a"].tokens) == (
            "succeeded",
            2,
            200,
        )
        assert status["b"].state == "pending"
        assert reader.transcript("b") == ['→ read {"path": "x.py"}']
        text = format_status(run, reader.status())
        assert "succeeded" in text
        assert "ended, exit 0" in text
        assert "run-1" in format_runs(reader.runs())
        assert "reason 2" in format_history("a", rows)
        assert "prompt 2" in format_iteration("a", 2, reader.iteration_detail("a", 2))
        loop_a = reader.status_json()["loops"][0]
        assert {k: loop_a[k] for k in ("name", "state", "reason", "iteration")} == {
            "name": "a",
            "state": "succeeded",
            "reason": "checks passed",
            "iteration": 2,
        }
        assert (loop_a["tokens"], loop_a["usd"], loop_a["cpu_s"]) == (200, 0.002, 0.0)


def test_history_json_has_exactly_the_documented_shape(tmp_path: Path) -> None:
    journal = _open_run(tmp_path)
    _iteration(journal, "a", 1)
    _iteration(journal, "a", 2, outcome="succeeded")
    journal.close()
    with JournalReader(tmp_path) as reader:
        data = reader.history_json("a")
    assert list(data) == ["loop", "iterations", "total"]
    assert data["loop"] == "a"
    keys = ["iteration", "outcome", "reason", "tokens", "usd", "started", "ended"]
    assert [list(item) for item in data["iterations"]] == [keys, keys]
    first = data["iterations"][0]
    assert (first["iteration"], first["outcome"], first["reason"]) == (1, "continue", "reason 1")
    assert (first["tokens"], first["usd"]) == (100, 0.001)
    assert isinstance(first["started"], float)
    assert first["ended"] >= first["started"]
    json.dumps(data)  # JSON-ready


def test_output_deltas_are_coalesced_into_few_rows(tmp_path: Path) -> None:
    journal = _open_run(tmp_path)
    text = "".join(chr(ord("a") + i % 26) + ("\n" if i % 50 == 49 else "") for i in range(1000))
    journal.record(ev.IterationStarted(loop="a", iteration=1, prompt="p"))
    for ch in text:
        journal.record(ev.AgentOutput(loop="a", iteration=1, text=ch))
    assert journal.statistics().pending_rows <= 4
    journal.flush_now()
    with sqlite3.connect(tmp_path / JOURNAL_NAME) as conn:
        chunks = conn.execute(
            "SELECT json FROM events WHERE type = 'output' ORDER BY seq"
        ).fetchall()
    assert 1 <= len(chunks) <= 2
    assert "".join(json.loads(c[0])["text"] for c in chunks) == text
    journal.close()


def test_coalescing_keeps_each_loops_order_around_other_events(tmp_path: Path) -> None:
    journal = _open_run(tmp_path, loops=("a", "b"))
    for n in (1,):
        journal.record(ev.IterationStarted(loop="a", iteration=n, prompt="p"))
        journal.record(ev.IterationStarted(loop="b", iteration=n, prompt="p"))
    for ch in "one ":
        journal.record(ev.AgentOutput(loop="a", iteration=1, text=ch))
        journal.record(ev.AgentOutput(loop="b", iteration=1, text=ch.upper()))
    journal.record(ev.ToolCalled(loop="a", iteration=1, tool_id="t", name="run", input={}))
    journal.record(ev.AgentOutput(loop="a", iteration=1, text="err\n", stream="stderr"))
    for ch in "two\n":
        journal.record(ev.AgentOutput(loop="a", iteration=1, text=ch))
        journal.record(ev.AgentOutput(loop="b", iteration=1, text=ch.upper()))
    journal.close()
    with JournalReader(tmp_path) as reader:
        assert reader.iteration_detail("a", 1).transcript == (
            "── iteration 1 ──\none \n→ run {}\nerr\ntwo\n"
        )
        assert reader.iteration_detail("b", 1).transcript == "── iteration 1 ──\nONE TWO\n"


@pytest.mark.anyio
async def test_cancelled_writer_flushes_what_is_pending(tmp_path: Path) -> None:
    journal = _open_run(tmp_path)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(journal.run_writer, 3600.0)
            await anyio.sleep(0.01)
            _iteration(journal, "a", 1)
            scope.cancel()
    assert journal.statistics().pending_events == 0
    with JournalReader(tmp_path) as reader:
        assert [r.outcome for r in reader.loop_iterations("a")] == ["continue"]
    journal.close()


@pytest.mark.anyio
async def test_max_batch_wakes_the_writer_before_the_interval(tmp_path: Path) -> None:
    journal = _open_run(tmp_path)
    journal.flush_now()
    async with anyio.create_task_group() as tg:
        tg.start_soon(journal.run_writer, 3600.0, 10)
        await anyio.sleep(0.01)
        for i in range(10):
            journal.record(ev.Notice(loop="a", message=f"n{i}"))
        with anyio.fail_after(5):
            while journal.statistics().pending_events:  # noqa: ASYNC110 (a sync statistic)
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert journal.statistics().batches_written >= 2
    journal.close()


def test_readers_work_while_the_writer_writes(tmp_path: Path) -> None:
    journal = _open_run(tmp_path)
    _iteration(journal, "a", 1)
    journal.flush_now()
    reader = JournalReader(tmp_path)
    # A reader holding a snapshot open neither blocks the writer nor sees half a batch.
    reader._conn.execute("BEGIN")
    assert len(reader.loop_iterations("a")) == 1
    for n in range(2, 6):
        _iteration(journal, "a", n)
        journal.flush_now()
        assert len(reader.loop_iterations("a")) == 1
    reader._conn.execute("COMMIT")
    rows = reader.loop_iterations("a")
    assert [r.iteration for r in rows] == [1, 2, 3, 4, 5]
    run = reader.latest_run()
    assert run is not None
    assert run.ended is None
    journal.close()
    reader.close()


def test_transcript_pages_back_through_older_text(tmp_path: Path) -> None:
    journal = _open_run(tmp_path)
    journal.record(ev.IterationStarted(loop="a", iteration=1, prompt="p"))
    for i in range(300):
        for ch in f"line {i}\n":
            journal.record(ev.AgentOutput(loop="a", iteration=1, text=ch))
        journal.flush_now()  # one chunk per line, as a slow stream would give
    journal.close()
    with JournalReader(tmp_path) as reader:
        assert reader.transcript("a", limit=3) == ["line 297", "line 298", "line 299"]
        seen: list[str] = []
        cursor: int | None = None
        while True:
            page = reader.transcript_page("a", before_seq=cursor, limit=50)
            seen[:0] = page.lines
            if page.before_seq is None:
                break
            cursor = page.before_seq
        assert seen == ["── iteration 1 ──"] + [f"line {i}" for i in range(300)]


# -- schema versions and bad files ------------------------------------------------
def test_an_older_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    with sqlite3.connect(path) as conn:  # a version-1 file, as the first release wrote it
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO runs VALUES ('old', 'loops.toml', 'h', 'text', 1.0, NULL, NULL, NULL)"
        )
        conn.execute(
            "INSERT INTO ledger (run_id, loop, kind, tokens, usd, ts)"
            " VALUES ('old', 'a', 'charge', 42, 0.5, 1.0)"
        )
        conn.execute("PRAGMA user_version = 1")
    journal = Journal.open(tmp_path)
    assert journal.find_resumable_run() == "old"
    assert journal.load_resume("old").tokens == 42
    journal.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT count(*) FROM resumes").fetchone()[0] == 0


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    Journal.open(tmp_path).close()
    with sqlite3.connect(tmp_path / JOURNAL_NAME) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    message = (
        f"journal.sqlite3 was written by a newer loopvisor (schema {SCHEMA_VERSION + 5} > "
        f"{SCHEMA_VERSION}); upgrade loopvisor"
    )
    with pytest.raises(JournalError) as caught:
        Journal.open(tmp_path)
    assert str(caught.value) == message
    with pytest.raises(JournalError, match="newer loopvisor"):
        JournalReader(tmp_path)


def test_a_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / JOURNAL_NAME).write_bytes(os.urandom(8192))
    with pytest.raises(JournalError, match="is not a loopvisor journal or is corrupt"):
        Journal.open(tmp_path)
    with pytest.raises(JournalError, match="is not a loopvisor journal or is corrupt"):
        JournalReader(tmp_path)


def test_another_applications_database_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / JOURNAL_NAME) as conn:
        conn.execute("CREATE TABLE notes (x)")
    with pytest.raises(JournalError, match="another application's database"):
        Journal.open(tmp_path)


def test_a_missing_journal_is_a_clear_error_for_readers(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no journal at"):
        JournalReader(tmp_path)


# -- kill -9 -------------------------------------------------------------------------
_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from supervisor import events as ev
    from supervisor.journal.writer import Journal

    journal = Journal.open(Path(sys.argv[1]))
    journal.start_run(sys.argv[2], Path("loops.toml"), "x")
    batch = 0
    while True:
        for i in range(2000):
            journal.record(ev.Notice(loop="a", message=f"{batch}:{i}"))
            journal.record(ev.AgentOutput(loop="a", iteration=batch, text="t"))
        journal.flush_now()
        batch += 1
    """
)


def _batches_written(path: Path, run_id: str) -> int:
    try:
        with sqlite3.connect(path, timeout=5) as conn:
            sql = "SELECT count(*) FROM events WHERE type = 'notice' AND run_id = ?"
            return int(conn.execute(sql, (run_id,)).fetchone()[0]) // 2000
    except sqlite3.OperationalError:
        return 0


def test_kill_9_mid_write_leaves_whole_batches_only(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    rounds = 5  # each kill lands at a random point of a write; several give many chances
    for round_no in range(rounds):
        run_id = f"r{round_no}"
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), run_id], start_new_session=True
        )
        try:
            deadline = time.monotonic() + 30
            while _batches_written(path, run_id) < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert _batches_written(path, run_id) >= 5, "the writer did not get going"
            time.sleep(random.uniform(0.0, 0.1))  # not just after a commit the poll saw
            assert proc.poll() is None
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL

    Journal.open(tmp_path).close()  # opens after the kills: WAL recovery is SQLite's job
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        for round_no in range(rounds):
            run_id = f"r{round_no}"
            counts: dict[int, int] = {}
            sql = "SELECT json FROM events WHERE type = 'notice' AND run_id = ?"
            for (text,) in conn.execute(sql, (run_id,)):
                batch = int(json.loads(text)["message"].split(":")[0])
                counts[batch] = counts.get(batch, 0) + 1
            sql = "SELECT count(*) FROM events WHERE type = 'output' AND run_id = ?"
            (outputs,) = conn.execute(sql, (run_id,)).fetchone()
            assert len(counts) >= 5
            assert set(counts) == set(range(len(counts))), f"{run_id}: a batch is missing"
            assert set(counts.values()) == {2000}, f"{run_id}: a batch was written in part"
            # A notice between deltas closes the chunk: one output row per event.
            assert outputs == 2000 * len(counts)


# -- resume --------------------------------------------------------------------------
def test_unfinished_run_is_found_and_finished_one_is_not(tmp_path: Path) -> None:
    journal = _open_run(tmp_path, "done")
    _iteration(journal, "a", 1, outcome="succeeded")
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
    journal = _open_run(tmp_path)
    _iteration(journal, "a", 1)
    _iteration(journal, "a", 2, outcome=None, text="partial ", release=True)
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
    _iteration(journal, "a", 2, outcome="succeeded", text="again\n")
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
    journal = _open_run(tmp_path)
    _iteration(journal, "a", 1)  # 100 tokens used and settled
    _iteration(journal, "a", 2, outcome=None, reserve=8000, usage=False, release=False)
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
    assert [k for k, _, s in _ledger(tmp_path) if s is not None] == ["charge", "release"]

    # The resumed run crashes again, mid-iteration with its own reservation settled.
    journal.mark_resumed("run-1")
    _iteration(journal, "a", 2, outcome=None, reserve=500, tokens=50)
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
    journal = _open_run(tmp_path)
    _iteration(journal, "a", 1, outcome=None, reserve=8000, tokens=300, usage=True, release=False)
    journal.close()
    journal = Journal.open(tmp_path)
    for _ in range(2):
        resume = journal.load_resume("run-1")
        assert resume.loops["a"].tokens == 8000
        assert resume.loops["a"].charged_at_reservation == 7700
        assert resume.usd == pytest.approx(0.01)
    settled = [(k, t) for k, t, s in _ledger(tmp_path) if s is not None]
    assert settled == [("charge", 7700), ("release", 0)]
    journal.close()


def test_retryable_error_reruns_the_same_iteration(tmp_path: Path) -> None:
    journal = _open_run(tmp_path)
    _iteration(journal, "a", 1)
    _iteration(journal, "a", 2, outcome="error")
    journal.record(ev.LoopStateChanged(loop="a", state="waiting", reason="retry 1/3"))
    journal.close()
    journal = Journal.open(tmp_path)
    loop = journal.load_resume("run-1").loops["a"]
    assert (loop.next_iteration, loop.retries_used, loop.interrupted_iteration) == (2, 1, None)
    assert (loop.state, loop.reason) == ("waiting", "retry 1/3")
    journal.close()


def test_restart_and_scheduled_runs_count_iterations_anew(tmp_path: Path) -> None:
    journal = _open_run(tmp_path, loops=("a", "s"))
    _iteration(journal, "a", 1)
    _iteration(journal, "a", 2, outcome="error")
    journal.record(ev.ControlApplied(op="restart", loop="a"))
    _iteration(journal, "a", 1)
    scheduled_run = {"type": "scheduled_run", "loop": "s", "run": 3, "ts": 1234.5}
    _iteration(journal, "s", 1)
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
    journal = _open_run(tmp_path)
    _iteration(journal, "a", 1)
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


def test_live_run_shows_running_iteration_and_a_crashed_one_does_not(tmp_path: Path) -> None:
    journal = _open_run(tmp_path, "old")
    _iteration(journal, "a", 1, outcome=None)
    journal.close()  # crashed, never resumed
    with StateLock(tmp_path):
        journal = _open_run(tmp_path, "new")
        _iteration(journal, "a", 1, outcome=None)
        journal.flush_now()
        with JournalReader(tmp_path) as reader:
            live = {r.run_id: r.live for r in reader.runs()}
            assert live == {"new": True, "old": False}
            (item,) = reader.history_json("a")["iterations"]
            assert (item["outcome"], item["ended"]) == (None, None)
            old = reader.loop_iterations("a", run_id="old")
            assert [r.outcome for r in old] == ["interrupted"]
            assert "live" in format_status(reader.latest_run(), reader.status())
        journal.close()
    with JournalReader(tmp_path) as reader:
        assert [r.outcome for r in reader.loop_iterations("a")] == ["interrupted"]
        assert "--resume" in format_status(reader.latest_run(), reader.status())


# -- with the real supervisor ---------------------------------------------------------
@pytest.mark.anyio
async def test_a_real_run_journals_iterations_and_a_ledger_matching_its_summary(
    tmp_path: Path,
) -> None:
    from helpers import load, loop, sim_agent, supervisor_table

    from supervisor.runtime import Supervisor

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    config = load(
        tmp_path,
        supervisor_table(max_concurrent=2),
        sim_agent("conv", converge_after=3, done_text="DONE", reply_tokens=200),
        loop("a", "conv", workspace="a", done_marker="DONE", max_iterations=5),
        loop("b", "conv", workspace="b", done_marker="DONE", max_iterations=2),
    )
    state = config.supervisor.state_dir
    journal = Journal.open(state)
    sup = Supervisor(config, run_id="real")
    journal.start_run(sup.run_id, config.path, config.path.read_text(), loops=config.loops)
    sup.add_sink(journal.record)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(journal.run_writer)
            summary = await sup.run()
            tg.cancel_scope.cancel()
    await sup.aclose()
    journal.finish_run(sup.run_id, summary.exit_code, summary.reason)
    assert journal.find_resumable_run() is None
    journal.close()

    assert [(r.name, r.state, r.iterations) for r in summary.loops] == [
        ("a", "succeeded", 3),
        ("b", "failed", 2),
    ]
    with JournalReader(state) as reader:
        run = reader.latest_run()
        assert run is not None
        assert (run.run_id, run.exit_code) == ("real", summary.exit_code)
        assert run.tokens == summary.tokens
        status = {r.loop: r for r in reader.status()}
        for result in summary.loops:
            rows = reader.loop_iterations(result.name)
            assert [r.iteration for r in rows] == list(range(1, result.iterations + 1))
            assert sum(r.tokens for r in rows) == result.tokens
            assert status[result.name].state == result.state
            assert status[result.name].tokens == result.tokens
        assert [r.outcome for r in reader.loop_iterations("a")] == [
            "continue",
            "continue",
            "succeeded",
        ]
        assert "DONE" in reader.iteration_detail("a", 3).transcript
        assert reader.iteration_detail("a", 3).prompt.startswith("Do the task. Iteration 3 of 5")
    assert [k for k, _, s in _ledger(state) if s is not None] == []  # nothing was left open


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
        usage = sum(
            ev.event_from_dict(json.loads(t)).tokens  # type: ignore[attr-defined]
            for (t,) in conn.execute("SELECT json FROM events WHERE type = 'usage'")
        )
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
    settled = [k for k, _, s in _ledger(state) if s is not None]
    assert settled == ["charge", "release"]
