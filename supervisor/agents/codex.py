"""`kind = "codex"`: the real Codex CLI, driven headless over `codex exec --json`.

Each turn runs, in the loop's workspace and in its own process group (`GroupProcess`),

    codex exec [resume] --json --skip-git-repo-check [-m M] -c sandbox_mode="S"
               ARGS [THREAD] -- PROMPT

and `codex_json.CodexJsonParser` turns every stdout line into agent events. stdin is
closed (`codex exec` otherwise reads it and appends it to the prompt); prompts longer
than `MAX_ARGV_PROMPT` go on stdin as `-`.

Usage as it arrives: `--json` reports usage only when the turn completes, so while the
turn runs `_SessionTail` follows Codex's session file for this thread
(`$CODEX_HOME/sessions/YYYY/MM/DD/rollout-*-THREAD.jsonl`, CODEX_HOME defaulting to
HOME/.codex in the child's environment), whose `token_usage_record` lines carry the
thread's running total as each model response lands, before Codex runs its tool
calls. The file is read on a timer and before every stdout chunk is passed on, so a
response's usage is charged no later than its first tool call is seen, and a budget
crossing kills the process group there. The bound this gives: the response that
crossed is the last one answered; a request Codex sent before the kill landed
(its tool calls took only milliseconds) is cut off unanswered. If the file cannot be
found (another layout in a future version), the turn is still charged in full at
`turn.completed`, only later.

Resume: `codex exec resume THREAD` continues a thread (same CODEX_HOME), and its
`turn.completed` then counts the whole thread; the thread's totals before the turn
(kept from the last turn, or read from the session file after a supervisor restart)
are subtracted. Step-in runs `codex resume THREAD`, Codex's own interactive TUI.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from supervisor.agents.codex_json import CodexJsonParser, session_total
from supervisor.agents.kinds.codex import DEFAULT_MODEL, KIND, CodexAgentSpec
from supervisor.agents.pricing import price_for
from supervisor.agents.stream_json_lines import raw_line
from supervisor.agents.usage import Tokens
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
SESSION_POLL_S = 0.25


class CodexAgent:
    """One per loop; keeps the thread id (resume, step-in) and the thread's totals."""

    def __init__(self, spec: CodexAgentSpec, loop: LoopSpec, ctx: AgentContext) -> None:
        self.spec = spec
        self.loop = loop
        self.ctx = ctx
        self._thread_id: str | None = None
        self._thread_total: Tokens | None = None
        self._proc: GroupProcess | None = None

    # -- the Agent protocol --------------------------------------------------------
    @property
    def session_id(self) -> str | None:
        return self._thread_id

    def restore(self, session_id: str | None, history: list[dict[str, Any]] | None) -> None:
        self._thread_id = session_id
        self._thread_total = None

    def conversation(self) -> list[dict[str, Any]] | None:
        return None  # the CLI keeps the conversation in its own session files

    def reset(self) -> None:
        self._thread_id = None
        self._thread_total = None

    async def aclose(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with anyio.CancelScope(shield=True):
                await proc.kill()

    # -- building the command --------------------------------------------------------
    def resume_id(self, request: AgentRequest | None = None) -> str | None:
        if self.loop.context == "continue" or (request is not None and request.resume):
            return self._thread_id
        return None

    def _env(self, supervisor: Mapping[str, str]) -> dict[str, str]:
        spec = self.spec
        return configured_env(
            pass_env=spec.pass_env, env=spec.env, supervisor=supervisor, kind_env=KIND.child_env
        )

    def codex_home(self, env: Mapping[str, str]) -> Path:
        """Where the child keeps its sessions (its CODEX_HOME, else HOME/.codex)."""
        merged = {**os.environ, **env}
        if merged.get("CODEX_HOME"):
            return Path(merged["CODEX_HOME"])
        return Path(merged.get("HOME") or Path.home()) / ".codex"

    def command(self, prompt: str, *, resume: str | None = None) -> tuple[list[str], bytes | None]:
        spec = self.spec
        argv = [spec.command, "exec"]
        if resume:
            argv.append("resume")
        argv += ["--json", "--skip-git-repo-check"]
        if spec.model:
            argv += ["-m", spec.model]
        argv += ["-c", f'sandbox_mode="{spec.sandbox}"', *spec.args]
        if resume:
            argv.append(resume)
        data = prompt.encode()
        if len(data) > MAX_ARGV_PROMPT:
            return [*argv, "--", "-"], data
        return [*argv, "--", prompt], None

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
        home = self.codex_home(env)
        baseline = Tokens()
        if resume:
            known = self._thread_total
            if known is None:
                known = await anyio.to_thread.run_sync(_last_total, home, resume)
            baseline = known or Tokens()
        parser = CodexJsonParser(
            price=self.price, model=spec.model or DEFAULT_MODEL, baseline=baseline
        )
        watch = Watchdog(
            name="codex", timeout=spec.timeout, stall=spec.stall, result_grace=RESULT_GRACE_S
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
                tailer: _SessionTail | None = None
                async with contextlib.aclosing(proc.chunks()) as chunks:
                    async for chunk in chunks:
                        watch.saw_output()
                        if chunk.stream == "stderr":
                            stderr_tail.extend(chunk.lines()[-STDERR_TAIL_LINES:])
                            await emit(send, raw_line(chunk.text.rstrip("\n")))
                            continue
                        parsed = [e for line in chunk.lines() for e in parser.feed(line)]
                        if tailer is not None:
                            await tailer.catch_up()  # the usage before the tool calls
                        for event in merge_text(parsed):
                            if isinstance(event, SessionStarted) and tailer is None:
                                tailer = _SessionTail(
                                    home, event.session_id, parser, send, meter, proc
                                )
                                tg.start_soon(tailer.run)
                            if isinstance(event, SessionStarted):
                                self._thread_id = event.session_id
                            elif isinstance(event, Usage):
                                event = meter.stamp(event, proc)
                            await emit(send, event)
                        if parser.completed or parser.failure is not None:
                            watch.result_seen()
                tg.cancel_scope.cancel()
            with anyio.move_on_after(KILL_GRACE_S):
                await proc.wait()
            if proc.returncode is None:
                await proc.kill()
            code = proc.returncode
            if tailer is not None:
                await tailer.catch_up()  # what landed after the last read (a killed turn)
            cpu = proc.sample_cpu()

        if cpu > meter.reported:
            await emit(send, Usage(cpu_s=cpu - meter.reported, usd=0.0, model=parser.model))
        if parser.thread_total is not None:
            self._thread_total = parser.thread_total
        elif parser.thread_id is not None:
            self._thread_total = baseline + parser.charged
        if watch.expired is not None and not parser.completed:
            await emit(send, AgentFailed(watch.expired, retryable=True, output=parser.last_text))
            return
        final = parser.finish(code, "\n".join(stderr_tail))
        if resume and parser.thread_id is None and isinstance(final, AgentFailed):
            self.reset()
            final = dataclasses.replace(
                final, message=f"{final.message} (thread {resume} dropped; next turn starts anew)"
            )
        await emit(send, final)

    def _forget(self, proc: GroupProcess) -> None:
        if self._proc is proc:
            self._proc = None


class _CpuMeter:
    """Puts the process group's CPU seconds since the last Usage on the next one."""

    def __init__(self) -> None:
        self.reported = 0.0

    def stamp(self, usage: Usage, proc: GroupProcess) -> Usage:
        cpu = proc.sample_cpu()
        stamped = dataclasses.replace(usage, cpu_s=max(0.0, cpu - self.reported))
        self.reported = max(cpu, self.reported)
        return stamped


def _session_file(home: Path, thread_id: str) -> Path | None:
    found = sorted((home / "sessions").glob(f"*/*/*/rollout-*-{thread_id}.jsonl"))
    return found[-1] if found else None


def _last_total(home: Path, thread_id: str) -> Tokens | None:
    """The thread's totals as its session file last recorded them (a supervisor
    restarted between two turns of a thread does not know them)."""
    path = _session_file(home, thread_id)
    if path is None:
        return None
    total: Tokens | None = None
    with contextlib.suppress(OSError), path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            got, _model = session_total(line)
            if got is not None:
                total = got
    return total


class _SessionTail:
    """Follows the thread's session file while the turn runs: each running total
    (`session_total`) is charged at once (`CodexJsonParser.observe_total`).

    Read on a timer (`SESSION_POLL_S`) and, through `catch_up`, before the events of
    every stdout chunk are passed on: Codex writes a response's `token_usage_record`
    before it runs the response's tool calls and reports them (`item.started`) on
    stdout, so the response's usage is charged no later than its first tool call is
    seen, and the turn is killed there if it crossed the budget."""

    def __init__(
        self,
        home: Path,
        thread_id: str,
        parser: CodexJsonParser,
        send: EventSend,
        meter: _CpuMeter,
        proc: GroupProcess,
    ) -> None:
        self.home = home
        self.thread_id = thread_id
        self._parser = parser
        self._send = send
        self._meter = meter
        self._proc = proc
        self._path: Path | None = None
        self._offset = 0
        self._partial = b""
        self._lock = anyio.Lock()

    async def run(self) -> None:
        while True:
            await self.catch_up()
            await anyio.sleep(SESSION_POLL_S)

    async def catch_up(self) -> None:
        """Charge whatever the session file has recorded since the last read."""
        async with self._lock:
            if self._path is None:
                self._path = await anyio.to_thread.run_sync(
                    _session_file, self.home, self.thread_id
                )
                if self._path is None:
                    return
            parser = self._parser
            for line in await anyio.to_thread.run_sync(self._read, self._path):
                total, model = session_total(line)
                if model:
                    parser.model = model  # the model the CLI really asked for
                if total is not None:
                    for event in parser.observe_total(total):
                        if isinstance(event, Usage):
                            event = self._meter.stamp(event, self._proc)
                        await emit(self._send, event)

    def _read(self, path: Path) -> list[str]:
        try:
            with path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return []
        self._offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        return [line.decode("utf-8", errors="replace") for line in lines]
