"""`kind = "gemini"`: the real Gemini CLI, driven headless over stream-json.

Each turn runs, in the loop's workspace and in its own process group (`GroupProcess`),

    gemini --output-format stream-json --skip-trust --approval-mode MODE [-m M]
           [--resume SESSION] ARGS -p PROMPT

and `gemini_json.GeminiJsonParser` turns every stdout line into agent events. stdin is
closed (headless `gemini` appends a piped stdin to the prompt); prompts longer than
`MAX_ARGV_PROMPT` go on stdin with an empty `-p`. `--skip-trust` because a headless
run in an untrusted folder exits at once (55); the loop's workspace is the user's
choice, trusted for this run only.

Usage: stream-json reports usage once, in the `result` line that ends the turn (its
`stats`, per model), so the turn is charged there: a budget crossing is seen only when
the turn is over, and the overshoot is bounded by one whole turn (every model call it
made), not by one response. `reserve_tokens` sets aside tokens before each turn, and
`timeout` bounds it. A turn killed before its `result` (timeout, stall, a supervisor
stop) reports no usage at all: what it spent is not charged (said in docs/agents.md).

Resume: `gemini --resume SESSION_ID` continues a session (same HOME); `stats` then
still counts only this process's requests, so nothing is subtracted. Step-in runs
`gemini --resume SESSION_ID`, the CLI's own interactive UI.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import deque
from collections.abc import Mapping
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
from supervisor.agents.gemini_json import GeminiJsonParser
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
        watch = Watchdog(
            name="gemini", timeout=spec.timeout, stall=spec.stall, result_grace=RESULT_GRACE_S
        )
        stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        cpu_reported = 0.0

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
                async with contextlib.aclosing(proc.chunks()) as chunks:
                    async for chunk in chunks:
                        watch.saw_output()
                        if chunk.stream == "stderr":
                            stderr_tail.extend(chunk.lines()[-STDERR_TAIL_LINES:])
                            await emit(send, raw_line(chunk.text.rstrip("\n")))
                            continue
                        parsed = [e for line in chunk.lines() for e in parser.feed(line)]
                        for event in merge_text(parsed):
                            if isinstance(event, SessionStarted):
                                self._session_id = event.session_id
                            elif isinstance(event, Usage):
                                cpu = proc.sample_cpu()
                                event = dataclasses.replace(
                                    event, cpu_s=max(0.0, cpu - cpu_reported)
                                )
                                cpu_reported = max(cpu, cpu_reported)
                            await emit(send, event)
                        if parser.completed:
                            watch.result_seen()
                tg.cancel_scope.cancel()
            with anyio.move_on_after(KILL_GRACE_S):
                await proc.wait()
            if proc.returncode is None:
                await proc.kill()
            code = proc.returncode
            cpu = proc.sample_cpu()

        if cpu > cpu_reported:
            await emit(send, Usage(cpu_s=cpu - cpu_reported, usd=0.0, model=parser.model))
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
