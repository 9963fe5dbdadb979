"""The kill rules every CLI agent's turn shares (claude-code, codex, gemini): a total
`timeout`, a `stall` (no output for that long: headless CLIs are known to hang), and
a grace after the CLI's final line (it saves its session and should exit). The
watchdog runs in the turn's task group beside the reader and kills the whole process
group; it never raises, so killing the CLI is what ends the turn's reading."""

from __future__ import annotations

import contextlib

import anyio

from supervisor.process import GroupProcess

WATCH_POLL_S = 0.25


class Watchdog:
    def __init__(
        self, *, name: str, timeout: float | None, stall: float | None, result_grace: float
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.stall = stall
        self.result_grace = result_grace
        self.started = anyio.current_time()
        self.last_output = self.started
        self.silence_allowed = 0.0
        self.result_deadline: float | None = None
        self.expired: str | None = None

    def saw_output(self) -> None:
        self.last_output = anyio.current_time()
        self.silence_allowed = 0.0

    def allow_silence(self, seconds: float) -> None:
        """The CLI announced a retry delay: silence for that long is not a stall."""
        self.silence_allowed = seconds

    def result_seen(self) -> None:
        if self.result_deadline is None:
            self.result_deadline = anyio.current_time() + self.result_grace

    def check(self, now: float) -> str | None:
        """Why the turn must be killed now, if it must."""
        name = self.name
        if self.timeout is not None and now - self.started >= self.timeout:
            return f"{name} timed out after {self.timeout:g}s"
        if self.result_deadline is not None and now >= self.result_deadline:
            return f"{name} did not exit within {self.result_grace:g}s of its result"
        if self.stall is not None and now - self.last_output >= self.stall + self.silence_allowed:
            silent = now - self.last_output
            return f"no output from {name} for {silent:.1f}s (stall {self.stall:g}s)"
        return None

    async def run(self, proc: GroupProcess) -> None:
        while True:
            reason = self.check(anyio.current_time())
            if reason is not None:
                self.expired = reason
                with contextlib.suppress(Exception):
                    await proc.kill()
                return
            await anyio.sleep(WATCH_POLL_S)
