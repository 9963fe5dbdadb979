"""The floor: the least any supervisor of N command agents must do, as a bare anyio program.

Reads each child's stdout in chunks (the same concurrency as loopvisor's run), writes
one JSON line per chunk to its stdout and batches SQLite rows (one transaction per
50 ms). `overhead.py` and `idle.py` measure it beside `loopvisor run --json` on the
same streams. It imports nothing it does not use: it is run as a file of its own, so
that the benchmarks' helpers (`_common`: compiling bytecode, measuring) cost it nothing.

Run: `python benchmarks/floor.py AGENTS DB ARGV...`.
"""

import json
import sqlite3
import subprocess
import sys

import anyio


async def floor(agents: int, argv: list[str], db: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE IF NOT EXISTS events (loop INTEGER, json TEXT)")
    pending: list[tuple[int, str]] = []
    out = sys.stdout  # a file in the benchmarks, as loopvisor's is

    async def flusher() -> None:
        while True:
            await anyio.sleep(0.05)
            if pending:
                conn.executemany("INSERT INTO events VALUES (?, ?)", pending)
                conn.commit()
                pending.clear()

    async def one(i: int) -> None:
        async with await anyio.open_process(
            argv, stdin=subprocess.DEVNULL, start_new_session=True
        ) as proc:
            assert proc.stdout is not None
            async for chunk in proc.stdout:
                text = chunk.decode("utf-8", "replace")
                line = json.dumps({"type": "output", "loop": i, "text": text})
                out.write(line + "\n")
                pending.append((i, line))
            await proc.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(flusher)
        async with anyio.create_task_group() as agents_tg:
            for i in range(agents):
                agents_tg.start_soon(one, i)
        tg.cancel_scope.cancel()
    if pending:
        conn.executemany("INSERT INTO events VALUES (?, ?)", pending)
        conn.commit()
    conn.close()
    out.flush()


if __name__ == "__main__":
    anyio.run(floor, int(sys.argv[1]), sys.argv[3:], sys.argv[2])
