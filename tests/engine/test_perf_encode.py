"""Each event is JSON-encoded once, for the journal and `run --json` both (issue 12).

Encoding is what output costs (~90 us per 64 KiB chunk): the journal's rows and the
printer's lines each encoded every event, where a bare reader encodes it once. These
tests count the encodes (untimed) and check that what each writes is what it wrote
before: the printer's line byte for byte, the journal's row as the same JSON value.
"""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import command_agent, load, loop, supervisor_table
from hypothesis import given
from hypothesis import strategies as st

from supervisor import eventjson
from supervisor import events as ev
from supervisor.cli.main import run_with_printer
from supervisor.durable import durable_supervisor
from supervisor.headless import HeadlessPrinter
from supervisor.journal.writer import Journal
from supervisor.textsafe import json_text, valid_text

HOSTILE = st.text(
    alphabet=st.sampled_from(
        ['a', 'é', '"', "\\", "\n", "\t", "\x00", "\x1b", "\x7f", "\x9b", "\u2028", "\u202e",
         "\ud800", "\udfff", "😀", "/"]
    ),
    max_size=30,
)  # fmt: skip


@given(text=HOSTILE, loop=HOSTILE, stream=st.sampled_from(["stdout", "stderr", "assistant"]))
def test_the_output_line_is_exactly_the_events_json_text(text: str, loop: str, stream: str) -> None:
    event = ev.AgentOutput(loop=loop, iteration=3, text=text, stream=stream)  # type: ignore[arg-type]
    assert eventjson.output_line(event) == json_text(event.to_dict())


@given(texts=st.lists(HOSTILE, min_size=1, max_size=4))
def test_a_rows_json_is_its_joined_texts(texts: list[str]) -> None:
    events = [ev.AgentOutput(loop="l", iteration=1, text=t, stream="stdout") for t in texts]
    row = eventjson.output_row(1.5, "l", 1, [eventjson.text_json(e) for e in events], "stdout")
    assert json.loads(row) == {
        "type": "output",
        "ts": 1.5,
        "loop": "l",
        "iteration": 1,
        "text": valid_text("".join(texts)),
        "stream": "stdout",
    }


def test_the_journal_and_the_printer_encode_each_chunk_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = [f"chunk {i} " + "x" * 50_000 + "\n" for i in range(6)]
    encoded: list[str] = []
    real_dumps = json.dumps

    def dumps(value: Any, **kw: Any) -> str:
        text = real_dumps(value, **kw)
        encoded.extend(c for c in chunks if c[:30] in text)  # "chunk N xxx...": which
        return text

    journal = Journal.open(tmp_path / "state")
    journal.start_run("r1", tmp_path / "loops.toml", "")
    out = io.StringIO()
    printer = HeadlessPrinter(json_lines=True, stream=out)
    events = [
        ev.AgentOutput(loop=f"l{i % 2}", iteration=1, text=c, stream="stdout")
        for i, c in enumerate(chunks)
    ]
    monkeypatch.setattr(json, "dumps", dumps)
    for event in events:  # as the bus hands them on: the journal (a sink), then the printer
        journal.record(event)
        printer.print_event(event)
    journal.flush_now()
    monkeypatch.undo()
    journal.close()
    assert sorted(encoded) == sorted(chunks)  # each once
    assert out.getvalue().splitlines() == [json_text(e.to_dict()) for e in events]
    with sqlite3.connect(tmp_path / "state" / "journal.sqlite3") as conn:
        rows = [json.loads(r[0]) for r in conn.execute("SELECT json FROM events ORDER BY seq")]
    for name in ("l0", "l1"):  # a loop's consecutive chunks share rows (~64 KiB each)
        texts = [r["text"] for r in rows if r["type"] == "output" and r["loop"] == name]
        assert "".join(texts) == "".join(e.text for e in events if e.loop == name)


async def _never() -> AsyncIterator[int]:
    await anyio.sleep_forever()
    yield 0  # pragma: no cover


@pytest.mark.anyio
async def test_run_json_encodes_each_event_once(tmp_path: Path) -> None:
    """`run --json` as the CLI runs it (journal and printer, both sinks): as many
    encodes as events (of an output event, its text), each printed and journalled."""
    script = (
        "import sys\n"
        "for i in range(5):\n"
        "    sys.stdout.write(f'{i} ' * 20_000 + '\\n'); sys.stdout.flush()\n"
        "print('DONE')\n"
    )
    config = load(
        tmp_path,
        supervisor_table(),
        command_agent("talker", script),
        loop("a", "talker", max_iterations=1, done_marker="DONE"),
        loop("b", "talker", max_iterations=1, done_marker="DONE"),
    )
    out = io.StringIO()
    before = eventjson.encodes
    async with durable_supervisor(config) as sup:
        code = await run_with_printer(sup, HeadlessPrinter(json_lines=True, stream=out), _never())
    assert code == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    outputs = [line for line in lines if line["type"] == "output"]
    assert len(outputs) >= 2
    assert eventjson.encodes - before == len(lines)
    assert lines[-1]["type"] == "summary"
    with sqlite3.connect(config.supervisor.state_dir / "journal.sqlite3") as conn:
        journalled = [json.loads(r[0]) for r in conn.execute("SELECT json FROM events")]
    assert [e for e in journalled if e["type"] != "output"] == [
        e for e in lines if e["type"] != "output"
    ]


def test_only_a_reservation_of_something_is_written_at_once(tmp_path: Path) -> None:
    """Write-ahead is for money at stake: a command agent's reservation of nothing (one
    per turn) waits for the next batch instead of a transaction of its own."""
    journal = Journal.open(tmp_path / "state")
    journal.start_run("r1", tmp_path / "loops.toml", "")
    reader = sqlite3.connect(tmp_path / "state" / "journal.sqlite3")

    def reservations() -> list[int]:
        rows = reader.execute("SELECT tokens FROM ledger WHERE kind = 'reserve' ORDER BY id")
        return [r[0] for r in rows]

    journal.record(ev.BudgetReserved(loop="cmd", iteration=1, tokens=0, usd=0.0))
    assert reservations() == []  # pending, with the batch
    journal.record(ev.BudgetReserved(loop="api", iteration=1, tokens=4000, usd=0.02))
    assert reservations() == [0, 4000]  # at once, with everything before it
    journal.close()
    reader.close()


def test_a_new_journal_has_big_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    """16 KiB pages: WAL costs a few system calls per page, and output is most of a
    journal (schema.PAGE_SIZE); a journal made with 4 KiB pages stays as it is."""
    journal = Journal.open(tmp_path / "new")
    journal.start_run("r1", tmp_path / "loops.toml", "")
    journal.close()
    old = tmp_path / "old"
    old.mkdir(mode=0o700)
    with sqlite3.connect(old / "journal.sqlite3") as conn:
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("VACUUM")  # (an empty file otherwise takes the size at first write)
    journal = Journal.open(old)
    journal.start_run("r1", tmp_path / "loops.toml", "")
    journal.record(ev.AgentOutput(loop="l", iteration=1, text="x" * 100_000, stream="stdout"))
    journal.close()
    sizes = {}
    for name in ("new", "old"):
        with sqlite3.connect(tmp_path / name / "journal.sqlite3") as conn:
            sizes[name] = conn.execute("PRAGMA page_size").fetchone()[0]
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert sizes == {"new": 16384, "old": 4096}
