"""The journal's write-ahead log stays small however much a run writes.

With 16 KiB pages SQLite's default auto-checkpoint (1,000 pages) let the WAL grow to
16 MB before it was reused, and it was never truncated: a talkative run filled a small
state disk with a log of pages already in the database (a 16 MB tmpfs ran out in ~25 s
of one sim loop). `connect_writer` bounds it (`WAL_LIMIT_BYTES`)."""

from __future__ import annotations

from pathlib import Path

from supervisor.journal.schema import WAL_LIMIT_BYTES, connect_writer


def test_the_wal_stays_under_its_limit_after_writing_far_more(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    conn = connect_writer(path)
    try:
        conn.execute("CREATE TABLE blobs (data BLOB)")
        chunk = b"x" * 60_000
        for _ in range(400):  # 24 MB in small transactions, as the writer commits batches
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO blobs VALUES (?)", [(chunk,)] * 1)
            conn.execute("COMMIT")
        wal = path.with_name(path.name + "-wal")
        assert wal.stat().st_size <= WAL_LIMIT_BYTES + 2 * 16384 * 8
        assert path.stat().st_size > 20_000_000  # the data went to the database
    finally:
        conn.close()
