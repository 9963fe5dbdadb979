"""`kind = "gemini"`: the real Gemini CLI, driven headless over stream-json.

Each turn runs, in the loop's workspace and in its own process group (`GroupProcess`),

    gemini --output-format stream-json --skip-trust --approval-mode MODE [-m M]
           [--resume SESSION] ARGS -p PROMPT

and `gemini_json.GeminiJsonParser` turns every stdout line into agent events. stdin is
closed (headless `gemini` appends a piped stdin to the prompt); prompts longer than
`MAX_ARGV_PROMPT` go on stdin with an empty `-p`. `--skip-trust` because a headless
run in an untrusted folder exits at once (55); the loop's workspace is the user's
choice, trusted for this run only.

Usage as it arrives: stream-json reports usage only in the `result` line that ends
the turn, so while the turn runs `_ChatTail` follows the CLI's own session file
(`GEMINI_HOME/.gemini/tmp/PROJECT/chats/session-*-ID8.jsonl`, GEMINI_HOME being the
child's GEMINI_CLI_HOME, else its HOME), where each model response's tokens are
written as it lands, while its tool calls run. It is read on a timer
(`CHAT_POLL_S`) and before every stdout chunk is passed on, so a response's usage is
charged no later than its tool results show on stdout, and a budget crossing kills
the process group there. The bound: the response that crossed is the last one
answered; a request the CLI sent before the kill landed (its tools took only
milliseconds) is cut off unanswered. The `result`'s stats then charge what the file
did not show (the router's classifier call when `model` is "auto"). If the file
cannot be found (another layout in a future version), the turn is charged in full
at its `result` only: then the overshoot is bounded by one whole turn.

Resume: `gemini --resume SESSION_ID` continues a session (same HOME); `stats` then
still counts only this process's requests, so nothing is subtracted. Step-in runs
`gemini --resume SESSION_ID`, the CLI's own interactive UI.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from supervisor.agents.base import (
    AgentFailed,
    AgentRequest,
    EventSend,
    SessionStarted,
    Usage,
    emit,
    merge_text,
)
from supervisor.agents.gemini_json import GeminiJsonParser, session_message
from supervisor.agents.kinds.gemini import DEFAULT_MODEL, KIND, GeminiAgentSpec
from supervisor.agents.pricing import price_for
from supervisor.agents.stream_json_lines import raw_line
from supervisor.agents.watchdog import Watchdog
from supervisor.childenv import configured_env
from supervisor.process import KILL_GRACE_S, GroupProcess
from supervisor.spec import LoopSpec, Price

if TYPE_CHECKING:
    from supervisor.agents.kind import AgentContext

MAX_LINE = 32 * 1024 * 1024
MAX_ARGV_PROMPT = 100_000
RESULT_GRACE_S = 15.0
STDERR_TAIL_LINES = 20
CHAT_POLL_S = 0.1


class GeminiAgent:
    """One per loop; keeps the session id (resume, step-in)."""

    def __init__(self, spec: GeminiAgentSpec, loop: LoopSpec, ctx: AgentContext) -> None:
        self.spec = spec
        self.loop = loop
        self.ctx = ctx
        self._session_id: str | None = None
        self._proc: GroupProcess | None = None

    # -- the Agent protocol --------------------------------------------------------
    @property
    def session_id(self) -> str | None:
        return self._session_id

    def restore(self, session_id: str | None, history: list[dict[str, Any]] | None) -> None:
        self._session_id = session_id

    def conversation(self) -> list[dict[str, Any]] | None:
        return None  # the CLI keeps the conversation in its own session files

    def reset(self) -> None:
        self._session_id = None

    async def aclose(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with anyio.CancelScope(shield=True):
                await proc.kill()

    # -- building the command --------------------------------------------------------
    def resume_id(self, request: AgentRequest | None = None) -> str | None:
        if self.loop.context == "continue" or (request is not None and request.resume):
            return self._session_id
        return None

    def _env(self, supervisor: Mapping[str, str]) -> dict[str, str]:
        spec = self.spec
        return configured_env(
            pass_env=spec.pass_env, env=spec.env, supervisor=supervisor, kind_env=KIND.child_env
        )

    def command(self, prompt: str, *, resume: str | None = None) -> tuple[list[str], bytes | None]:
        spec = self.spec
        argv = [spec.command, "--output-format", "stream-json", "--skip-trust"]
        argv += ["--approval-mode", spec.approval_mode]
        if spec.model:
            argv += ["-m", spec.model]
        if resume:
            argv += ["--resume", resume]
        argv += spec.args
        data = prompt.encode()
        if len(data) > MAX_ARGV_PROMPT:
            return [*argv, "-p", ""], data
        return [*argv, "-p", prompt], None

    def price(self, model: str | None) -> Price | None:
        return price_for(model or self.spec.model or DEFAULT_MODEL, self.ctx.pricing)

    # -- one turn --------------------------------------------------------------------
    async def run(self, request: AgentRequest, send: EventSend) -> None:
        spec = self.spec
        await request.budget.reserve(
            input_tokens=0,
            max_output_tokens=spec.reserve_tokens,
            model=spec.model,
            minimum_output_tokens=0,
        )
        resume = self.resume_id(request)
        argv, stdin = self.command(request.prompt, resume=resume)
        env = self._env(request.env)
        parser = GeminiJsonParser(price=self.price, model=spec.model or DEFAULT_MODEL)
        home = gemini_home(env)
        if resume:
            parser.known_messages = await anyio.to_thread.run_sync(_message_ids, home, resume)
        watch = Watchdog(
            name="gemini", timeout=spec.timeout, stall=spec.stall, result_grace=RESULT_GRACE_S
        )
        stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        meter = _CpuMeter()

        async with contextlib.AsyncExitStack() as stack:
            try:
                proc = await stack.enter_async_context(
                    GroupProcess(
                        argv, cwd=request.workspace, env=env, stdin=stdin, max_line=MAX_LINE
                    )
                )
            except OSError as exc:
                await emit(
                    send, AgentFailed(f"cannot start {spec.command!r}: {exc}", retryable=False)
                )
                return
            self._proc = proc
            stack.callback(self._forget, proc)
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch.run, proc)
                tail: _ChatTail | None = None
                async with contextlib.aclosing(proc.chunks()) as chunks:
                    async for chunk in chunks:
                        watch.saw_output()
                        if chunk.stream == "stderr":
                            stderr_tail.extend(chunk.lines()[-STDERR_TAIL_LINES:])
                            await emit(send, raw_line(chunk.text.rstrip("\n")))
                            continue
                        if tail is not None:
                            await tail.catch_up()  # the usage before the tool results
                        parsed = [e for line in chunk.lines() for e in parser.feed(line)]
                        for event in merge_text(parsed):
                            if isinstance(event, SessionStarted):
                                self._session_id = event.session_id
                                if tail is None:
                                    tail = _ChatTail(
                                        home, event.session_id, parser, send, meter, proc
                                    )
                                    tg.start_soon(tail.run)
                            elif isinstance(event, Usage):
                                event = meter.stamp(event, proc)
                            await emit(send, event)
                        if parser.completed:
                            watch.result_seen()
                tg.cancel_scope.cancel()
            with anyio.move_on_after(KILL_GRACE_S):
                await proc.wait()
            if proc.returncode is None:
                await proc.kill()
            code = proc.returncode
            if tail is not None:
                await tail.catch_up()  # what landed after the last read (a killed turn)
            cpu = proc.sample_cpu()

        if cpu > meter.reported:
            await emit(send, Usage(cpu_s=cpu - meter.reported, usd=0.0, model=parser.model))
        if watch.expired is not None and not parser.completed:
            await emit(send, AgentFailed(watch.expired, retryable=True, output=parser.last_text))
            return
        final = parser.finish(code, "\n".join(stderr_tail))
        if resume and parser.session_id is None and isinstance(final, AgentFailed):
            self.reset()
            final = dataclasses.replace(
                final, message=f"{final.message} (session {resume} dropped; next turn starts anew)"
            )
        await emit(send, final)

    def _forget(self, proc: GroupProcess) -> None:
        if self._proc is proc:
            self._proc = None


def gemini_home(env: Mapping[str, str]) -> Path:
    """Where the child keeps its settings and sessions (GEMINI_CLI_HOME, else HOME)."""
    merged = {**os.environ, **env}
    return Path(merged.get("GEMINI_CLI_HOME") or merged.get("HOME") or Path.home())


def _chat_files(home: Path, session_id: str) -> list[Path]:
    """The session's files (named by the id's first 8 characters; the first line, its
    metadata, names the whole id)."""
    found = []
    for path in sorted(
        (home / ".gemini" / "tmp").glob(f"*/chats/session-*-{session_id[:8]}.jsonl")
    ):
        with contextlib.suppress(OSError, ValueError), path.open(encoding="utf-8") as f:
            if json.loads(f.readline()).get("sessionId") == session_id:
                found.append(path)
    return found


def _message_ids(home: Path, session_id: str) -> set[str]:
    """The responses a resumed session's files already hold (earlier turns)."""
    ids: set[str] = set()
    for path in _chat_files(home, session_id):
        with contextlib.suppress(OSError), path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                got = session_message(line)
                if got is not None:
                    ids.add(got[0])
    return ids


class _CpuMeter:
    """Puts the process group's CPU seconds since the last Usage on the next one."""

    def __init__(self) -> None:
        self.reported = 0.0

    def stamp(self, usage: Usage, proc: GroupProcess) -> Usage:
        cpu = proc.sample_cpu()
        stamped = dataclasses.replace(usage, cpu_s=max(0.0, cpu - self.reported))
        self.reported = max(cpu, self.reported)
        return stamped


class _ChatTail:
    """Follows the session's file(s) while the turn runs: each response's tokens are
    charged at once (`GeminiJsonParser.observe_message`). Read on a timer and, through
    `catch_up`, before the events of every stdout chunk are passed on."""

    def __init__(
        self,
        home: Path,
        session_id: str,
        parser: GeminiJsonParser,
        send: EventSend,
        meter: _CpuMeter,
        proc: GroupProcess,
    ) -> None:
        self.home = home
        self.session_id = session_id
        self._parser = parser
        self._send = send
        self._meter = meter
        self._proc = proc
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}
        self._lock = anyio.Lock()

    async def run(self) -> None:
        while True:
            await self.catch_up()
            await anyio.sleep(CHAT_POLL_S)

    async def catch_up(self) -> None:
        """Charge whatever the session's files have recorded since the last read."""
        async with self._lock:
            for line in await anyio.to_thread.run_sync(self._read):
                got = session_message(line)
                if got is None:
                    continue
                for event in self._parser.observe_message(*got):
                    if isinstance(event, Usage):
                        event = self._meter.stamp(event, self._proc)
                    await emit(self._send, event)

    def _read(self) -> list[str]:
        lines: list[str] = []
        for path in _chat_files(self.home, self.session_id):
            offset = self._offsets.get(path, 0)
            try:
                with path.open("rb") as f:
                    f.seek(offset)
                    data = f.read()
            except OSError:
                continue
            self._offsets[path] = offset + len(data)
            *done, self._partial[path] = (self._partial.get(path, b"") + data).split(b"\n")
            lines += [line.decode("utf-8", errors="replace") for line in done]
        return lines
