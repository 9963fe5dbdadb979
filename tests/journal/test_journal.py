"""The SQLite journal: batching, readers, schema versions and crash safety (resume:
test_journal_resume.py)."""

from __future__ import annotations

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
from journal_support import ledger_rows, open_run, record_iteration

from supervisor import events as ev
from supervisor.journal.reader import JournalReader
from supervisor.journal.render import format_history, format_iteration, format_runs, format_status
from supervisor.journal.schema import JOURNAL_NAME, MIGRATIONS, SCHEMA_VERSION
from supervisor.journal.statelock import StateLock
from supervisor.journal.writer import Journal, JournalError


# -- writing and reading ---------------------------------------------------------
@pytest.mark.anyio
async def test_round_trip_through_the_writer_task(tmp_path: Path) -> None:
    journal = open_run(tmp_path, loops=("a", "b"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(journal.run_writer, 0.01)
        record_iteration(journal, "a", 1)
        tool_in = {"path": "x.py"}
        journal.record(
            ev.ToolCalled(loop="b", iteration=1, tool_id="t1", name="read", input=tool_in)
        )
        await anyio.sleep(0.05)
        record_iteration(journal, "a", 2, outcome="succeeded", text="done\n")
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
    journal = open_run(tmp_path)
    record_iteration(journal, "a", 1)
    record_iteration(journal, "a", 2, outcome="succeeded")
    journal.close()
    with JournalReader(tmp_path) as reader:
        data = reader.history_json("a")
    assert list(data) == ["loop", "iterations", "total"]
    assert data["loop"] == "a"
    keys = ["iteration", "outcome", "reason", "tokens", "usd", "started", "ended", "commit"]
    keys += ["score", "kept"]  # null but for a metric loop's iterations
    assert [list(item) for item in data["iterations"]] == [keys, keys]
    assert data["iterations"][0]["commit"] is None  # not a worktree loop
    first = data["iterations"][0]
    assert (first["iteration"], first["outcome"], first["reason"]) == (1, "continue", "reason 1")
    assert (first["tokens"], first["usd"]) == (100, 0.001)
    assert isinstance(first["started"], float)
    assert first["ended"] >= first["started"]
    json.dumps(data)  # JSON-ready


def test_output_deltas_are_coalesced_into_few_rows(tmp_path: Path) -> None:
    journal = open_run(tmp_path)
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
    journal = open_run(tmp_path, loops=("a", "b"))
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
    journal = open_run(tmp_path)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(journal.run_writer, 3600.0)
            await anyio.sleep(0.01)
            record_iteration(journal, "a", 1)
            scope.cancel()
    assert journal.statistics().pending_events == 0
    with JournalReader(tmp_path) as reader:
        assert [r.outcome for r in reader.loop_iterations("a")] == ["continue"]
    journal.close()


@pytest.mark.anyio
async def test_max_batch_wakes_the_writer_before_the_interval(tmp_path: Path) -> None:
    journal = open_run(tmp_path)
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
    journal = open_run(tmp_path)
    record_iteration(journal, "a", 1)
    journal.flush_now()
    reader = JournalReader(tmp_path)
    # A reader holding a snapshot open neither blocks the writer nor sees half a batch.
    reader._conn.execute("BEGIN")
    assert len(reader.loop_iterations("a")) == 1
    for n in range(2, 6):
        record_iteration(journal, "a", n)
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
    journal = open_run(tmp_path)
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


def test_live_run_shows_running_iteration_and_a_crashed_one_does_not(tmp_path: Path) -> None:
    journal = open_run(tmp_path, "old")
    record_iteration(journal, "a", 1, outcome=None)
    journal.close()  # crashed, never resumed
    with StateLock(tmp_path):
        journal = open_run(tmp_path, "new")
        record_iteration(journal, "a", 1, outcome=None)
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
    assert [k for k, _, s in ledger_rows(state) if s is not None] == []  # nothing was left open
