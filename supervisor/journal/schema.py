"""The journal's SQLite layout, its versions and how a file is opened safely.

`PRAGMA user_version` holds the schema version and `PRAGMA application_id` marks
the file as loopvisor's. Opening for writing upgrades an older file in place (one
transaction per step, so a crash mid-upgrade leaves the old version intact) and
refuses a newer one; readers never upgrade and refuse any other version.

Version history:
  1  runs, loops, iterations, events, ledger.
  2  crash settlement: ledger `settles`/`note`, run wall-time bookkeeping
     (`wall_before`, `session_started`) and the `resumes` table.
  3  checkpoint commits: `iterations.git_commit` and `git_parent` (`checkpoint.py`).
     Readers also read a version-2 file as it is (no commits), so that `history`
     and `status` keep working on a journal no supervisor has opened since.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from supervisor.diskfull import DiskFull, is_disk_full

JOURNAL_NAME = "journal.sqlite3"
SCHEMA_VERSION = 3
READABLE_FROM = 2
"""The oldest version readers read without an upgrade (what is missing reads as empty)."""
APPLICATION_ID = 0x4C4F4F50  # "LOOP"
BUSY_TIMEOUT_S = 5.0
PAGE_SIZE = 16384
WAL_LIMIT_BYTES = 4 * 1024 * 1024
"""How large the write-ahead log may grow before it is checkpointed and truncated:
SQLite's default (1,000 pages, 16 MB at this page size, never truncated) filled a
small state disk with pages the database already held."""
"""Of a new journal (an existing one keeps its own). Output is most of what a journal
holds, in rows of up to ~64 KiB, and WAL costs about four system calls per page (the
frame's header and its page, then the checkpoint's read and write): with 16 KiB pages
a run's journal costs as much CPU as a rollback-journal SQLite with 4 KiB pages (the
benchmark floor), about half of what 4 KiB pages in WAL mode did. A small transaction
writes a few pages, so 16 KiB instead of 4 each; not larger for that reason."""


class JournalError(Exception):
    """The journal cannot be used: corrupt, foreign, too new, or missing (exit code 3)."""


_V1: tuple[str, ...] = (
    """CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        config_path TEXT NOT NULL,
        config_hash TEXT NOT NULL,
        config_text TEXT NOT NULL,
        started REAL NOT NULL,
        ended REAL,
        exit_code INTEGER,
        reason TEXT
    )""",
    """CREATE TABLE loops (
        run_id TEXT NOT NULL,
        name TEXT NOT NULL,
        position INTEGER NOT NULL DEFAULT 0,
        spec TEXT,
        state TEXT NOT NULL DEFAULT 'pending',
        reason TEXT NOT NULL DEFAULT '',
        iteration INTEGER NOT NULL DEFAULT 0,
        updated REAL,
        PRIMARY KEY (run_id, name)
    )""",
    """CREATE TABLE iterations (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        loop TEXT NOT NULL,
        iteration INTEGER NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 1,
        start_seq INTEGER,
        prompt TEXT NOT NULL DEFAULT '',
        session_id TEXT,
        outcome TEXT,
        reason TEXT NOT NULL DEFAULT '',
        tokens INTEGER NOT NULL DEFAULT 0,
        usd REAL NOT NULL DEFAULT 0,
        started REAL NOT NULL,
        ended REAL
    )""",
    "CREATE INDEX iterations_by_loop ON iterations (run_id, loop, iteration, attempt)",
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        run_id TEXT,
        loop TEXT,
        iteration INTEGER,
        ts REAL NOT NULL,
        type TEXT NOT NULL,
        json TEXT NOT NULL
    )""",
    "CREATE INDEX events_by_loop ON events (run_id, loop, seq)",
    "CREATE INDEX events_by_iteration ON events (run_id, loop, iteration, seq)",
    """CREATE TABLE ledger (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        loop TEXT NOT NULL,
        iteration INTEGER NOT NULL DEFAULT 0,
        kind TEXT NOT NULL CHECK (kind IN ('reserve', 'release', 'charge')),
        tokens INTEGER NOT NULL DEFAULT 0,
        usd REAL NOT NULL DEFAULT 0,
        cpu_s REAL NOT NULL DEFAULT 0,
        ts REAL NOT NULL
    )""",
    "CREATE INDEX ledger_by_loop ON ledger (run_id, loop, id)",
)

_V2: tuple[str, ...] = (
    "ALTER TABLE ledger ADD COLUMN settles INTEGER",
    "ALTER TABLE ledger ADD COLUMN note TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE runs ADD COLUMN wall_before REAL NOT NULL DEFAULT 0",
    "ALTER TABLE runs ADD COLUMN session_started REAL",
    """CREATE TABLE resumes (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        ts REAL NOT NULL,
        config_hash TEXT NOT NULL,
        config_changed INTEGER NOT NULL DEFAULT 0
    )""",
)

_V3: tuple[str, ...] = (
    "ALTER TABLE iterations ADD COLUMN git_commit TEXT",
    "ALTER TABLE iterations ADD COLUMN git_parent TEXT",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3)
"""MIGRATIONS[n] takes a file from version n to n + 1 (0 = empty file)."""
assert len(MIGRATIONS) == SCHEMA_VERSION


def _bad_file(path: Path, exc: BaseException | str) -> JournalError:
    return JournalError(f"{path} is not a loopvisor journal or is corrupt: {exc}")


def _too_new(found: int) -> JournalError:
    return JournalError(
        f"{JOURNAL_NAME} was written by a newer loopvisor "
        f"(schema {found} > {SCHEMA_VERSION}); upgrade loopvisor"
    )


def _header(conn: sqlite3.Connection, path: Path) -> tuple[int, int, int]:
    """(user_version, application_id, number of tables) of an open file."""
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        tables = int(conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise _bad_file(path, exc) from exc
    if app_id not in (0, APPLICATION_ID) or (version == 0 and tables > 0):
        raise _bad_file(path, "it holds another application's database")
    return version, app_id, tables


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    version, _, _ = _header(conn, path)
    if version > SCHEMA_VERSION:
        raise _too_new(version)
    while version < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version += 1


def connect_writer(path: Path) -> sqlite3.Connection:
    """The single writing connection: WAL, synchronous=NORMAL, schema upgraded."""
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
        )
        _, _, tables = _header(conn, path)  # refuse foreign files before touching them
        if tables == 0:  # a new (empty) file: before anything is written to it
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        if mode.lower() != "wal":
            raise JournalError(f"{path}: cannot switch to WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous=NORMAL")
        page = int(conn.execute("PRAGMA page_size").fetchone()[0])
        conn.execute(f"PRAGMA wal_autocheckpoint = {max(1, WAL_LIMIT_BYTES // page)}")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
        _migrate(conn, path)
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()
        if is_disk_full(exc):  # not a bad file: a full disk (exit 5, see diskfull.py)
            raise DiskFull(path.parent) from exc
        raise _bad_file(path, exc) from exc
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    return conn


def connect_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection; works beside a live writer (WAL readers never block it)."""
    if not path.exists():
        raise JournalError(f"no journal at {path} (nothing has run with this state dir)")
    conn: sqlite3.Connection | None = None
    try:
        uri = path.resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        version, _, _ = _header(conn, path)
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()
        raise _bad_file(path, exc) from exc
    if version > SCHEMA_VERSION:
        conn.close()
        raise _too_new(version)
    if version < READABLE_FROM:
        conn.close()
        raise JournalError(
            f"{path} uses an older journal schema ({version} < {SCHEMA_VERSION}); "
            "`loopvisor run --resume` upgrades it"
        )
    return conn


def has_commits(conn: sqlite3.Connection) -> bool:
    """The file has the checkpoint columns (version 3 and up; readers may hold a 2)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0]) >= 3


def quick_check(conn: sqlite3.Connection, path: Path) -> None:
    """Raise JournalError unless SQLite's quick_check passes (used before a resume)."""
    try:
        rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        raise _bad_file(path, exc) from exc
    if rows != ["ok"]:
        raise _bad_file(path, "; ".join(rows[:3]))
