"""The kill -9 matrix under random kills: a real `loopvisor run --json` child with heavy
output SIGKILLed at random moments (mid journal write), resumed each time. The ledger
is exactly the journalled usage plus the crash charges; it differs from what the
agents printed only by the usage of the last uncommitted batch (the journal writes
every 50 ms), which the test measures and prints (`pytest -s`; LOOPVISOR_KILL_SEED
picks other moments). Machinery: tests/resume_support.py.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

from helpers import loop, sim_agent, supervisor_table, write_config
from resume_support import (
    Event,
    Harness,
    Session,
    assert_contiguous,
    charged,
    journal_events,
    loop_state,
    query,
    result,
    settlements,
    usage_key,
    usage_tokens,
)

from supervisor.journal.reader import JournalReader
from supervisor.journal.schema import JOURNAL_NAME


# -- 3. mid-journal-write: random kills under heavy output --------------------------------
def wal_state(state: Path) -> tuple[int, int]:
    try:
        st = (state / f"{JOURNAL_NAME}-wal").stat()
    except FileNotFoundError:
        return (0, 0)
    return (st.st_size, st.st_mtime_ns)


def wal_uncommitted_frames(state: Path) -> int:
    """Frames of the current WAL generation after its last commit frame: a transaction
    the writer was in the middle of when it died (SQLite ignores them on recovery)."""
    path = state / f"{JOURNAL_NAME}-wal"
    if not path.exists():
        return 0
    data = path.read_bytes()
    if len(data) < 32:
        return 0
    page_size = int.from_bytes(data[8:12], "big")
    salts = data[16:24]
    offset, frames, last_commit = 32, 0, 0
    while offset + 24 + page_size <= len(data) and data[offset + 8 : offset + 16] == salts:
        frames += 1
        if int.from_bytes(data[offset + 4 : offset + 8], "big"):
            last_commit = frames
        offset += 24 + page_size
    return frames - last_commit


def assert_journal_consistent(state: Path) -> None:
    """Whole batches only: SQLite's own check, and each derived table in step with the
    events it is derived from (they are written in the same transaction)."""
    assert query(state, "PRAGMA integrity_check") == [("ok",)]
    started = query(state, "SELECT count(*) FROM events WHERE type = 'iteration_started'")
    assert started == query(state, "SELECT count(*) FROM iterations")
    booked = query(
        state, "SELECT count(*) FROM events WHERE type IN ('usage', 'reserved', 'released')"
    )
    assert booked == query(state, "SELECT count(*) FROM ledger WHERE settles IS NULL")
    for name, state_now in query(state, "SELECT name, state FROM loops"):
        rows = query(
            state,
            "SELECT json FROM events WHERE type = 'state' AND loop = ? ORDER BY seq DESC LIMIT 1",
            name,
        )
        if rows:
            assert json.loads(rows[0][0])["state"] == state_now, name


def test_random_kills_under_heavy_output_lose_no_batch_and_charge_nothing_twice(
    harness: Harness,
) -> None:
    h = harness
    seed = int(os.environ.get("LOOPVISOR_KILL_SEED", "20261127"))
    rng = random.Random(seed)
    names = [f"l{i}" for i in range(10)]
    converge = {name: 2 + i % 5 for i, name in enumerate(names)}
    for name in names:
        (h.tmp_path / name).mkdir()
    write_config(
        h.tmp_path,
        supervisor_table(max_concurrent=10, tokens=5_000_000),
        *(
            sim_agent(f"a{name}", rate=4000, reply_tokens=300, converge_after=converge[name],
                      done_text="DONE", seed=i)
            for i, name in enumerate(names)
        ),
        *(
            loop(name, f"a{name}", workspace=name, done_marker="DONE", max_iterations=8,
                 stuck={"same_output": 0})
            for name in names
        ),
    )  # fmt: skip
    printed: list[Event] = []
    kills: list[str] = []
    finished: dict[str, int] = {}
    """Loops the journal had as finished after a kill -> their iteration rows then."""

    ended: tuple[Session, Event] | None = None
    for round_no in range(5):
        session = h.start(resume=round_no > 0)
        target = rng.randint(20, 800)
        if session.wait_count(target):
            # The precise moment: the writer has just started writing a batch.
            before, deadline = wal_state(h.state), time.monotonic() + 1.0
            while wal_state(h.state) == before and time.monotonic() < deadline:
                if session.proc.poll() is not None:
                    break
        if session.proc.poll() is not None or len(session.events) < target:
            ended = (session, session.finish())  # it ended first: a clean end
            kills.append(f"round {round_no}: ended by itself at line {len(session.events)}")
            break
        session.kill9()
        torn = wal_uncommitted_frames(h.state)
        where = f"seed {seed}, round {round_no}, after {len(session.events)} lines"
        kills.append(f"round {round_no}: line {len(session.events)}, torn frames {torn}")

        assert_journal_consistent(h.state)
        # What the journal holds of this session's usage and what was printed agree up
        # to where either stopped (the journal may be one batch behind or ahead).
        since = session.of("run_started")[0]["ts"]
        committed = [usage_key(e) for e in journal_events(h.state, "usage") if e["ts"] >= since]
        shown = [usage_key(e) for e in session.of("usage")]
        common = min(len(committed), len(shown))
        assert committed[:common] == shown[:common], where
        printed += session.of("usage")
        for name in names:
            items = history_of(h.state, name)
            if items:
                assert_contiguous(items, name)
            if name in finished:
                assert len(items) == finished[name], f"{where}: finished {name} ran again"
            elif loop_state(h.state, name) == "succeeded":
                finished[name] = len(items)

    final, summary = ended or h.resume_to_end()
    assert summary["exit_code"] == 0, kills
    for name in names:
        items = history_of(h.state, name)
        assert_contiguous(items, name)
        assert items[-1]["iteration"] == converge[name] == result(summary, name)["iterations"]
        assert items[-1]["outcome"] == "succeeded"
        assert charged(h.state, name) == result(summary, name)["tokens"]
        if name in finished:
            assert len(items) == finished[name], f"finished {name} ran again"
            assert final.of("iteration_started", name) == []
    assert h.history(names[0]) == history_of(h.state, names[0])  # the CLI says the same
    assert summary["tokens"] == charged(h.state)

    # The ledger is every usage event the journal holds (each once) plus what crashes
    # charged at the reservation; the agents' reports differ from it only by the usage
    # printed in the last moments before a kill that no batch had committed yet.
    journal_usage = journal_events(h.state, "usage")
    keys = [usage_key(e) for e in journal_usage]
    assert len(keys) == len(set(keys)), "a usage event was recorded twice"
    at_reservation = sum(t for kind, t, _ in settlements(h.state) if kind == "charge")
    for name in names:
        assert charged(h.state, name) == usage_tokens(journal_usage, name) + sum(
            t for kind, t, _ in settlements(h.state, name) if kind == "charge"
        )
    journal_keys = set(keys)
    assert {usage_key(e) for e in final.of("usage")} <= journal_keys  # a clean end loses none
    printed += final.of("usage")
    printed_keys = {usage_key(e) for e in printed}
    lost = [e for e in printed if usage_key(e) not in journal_keys]
    unprinted = [e for e in journal_usage if usage_key(e) not in printed_keys]
    reported = usage_tokens(printed)
    assert charged(h.state) == (
        reported - usage_tokens(lost) + usage_tokens(unprinted) + at_reservation
    ), kills
    print(
        f"\nkill matrix (seed {seed}): {kills}; reported {reported}, ledger"
        f" {charged(h.state)}, printed but never journalled {usage_tokens(lost)},"
        f" journalled but not yet printed {usage_tokens(unprinted)},"
        f" charged at the reservation {at_reservation}"
    )


def history_of(state: Path, name: str) -> list[Event]:
    """`history NAME --json` in-process (the same reader the CLI uses)."""
    with JournalReader(state) as reader:
        items: list[Event] = reader.history_json(name)["iterations"]
    return items
