"""`kind = "claude-code"`: the real Claude Code CLI, driven headless over stream-json.

Each turn runs, in the loop's workspace and in its own process group (`GroupProcess`),

    claude -p --output-format stream-json --verbose [--include-partial-messages]
           [--model M] [--resume=SESSION [--resume-session-at=UUID] [--fork-session]]
           ARGS -- PROMPT

and `stream_json.StreamJsonParser` turns every stdout line into agent events. Usage is
reported as it streams (so the loop can kill a turn that crosses its budget: the
overshoot is bounded by one message) and reconciled with the CLI's own totals at the
end. A turn is also killed when it runs longer than `timeout` or prints nothing for
`stall` seconds (`claude -p` is known to hang); `api_retry` waits extend the stall
allowance by their delay.

Why hand-parsing and not the `claude-agent-sdk` package (evaluated at 0.2.x):

- It wraps the very same CLI over the very same stream-json lines, so it would save
  us only the parser (a few hundred lines, tested on recordings of the real CLI), and
  its typed messages carry the same per-message usage and the same session-cumulative
  `total_cost_usd` after a resume, which we would have to reconcile anyway.
- Killing: we must kill the whole process tree when the budget is crossed, on stall,
  on timeout and on operator stop. The SDK starts the CLI without a new session and
  terminates only that one process (stdin EOF, 5 s, SIGTERM, 5 s, SIGKILL), so
  commands the CLI's Bash tool started can survive; it has no stall detection and no
  total timeout, and its reader and stderr tasks are spawned outside the caller's
  task group. `GroupProcess` gives us all of that with structured concurrency.
- Size and coupling: the wheel is about 178 MB because it bundles its own CLI binary
  (about 400 MB installed), which it prefers to `claude` on PATH unless `cli_path`
  is set: a second, unpinned copy of the CLI in every install.
  loopvisor wants the operator's pinned CLI (`command`), installed once
  (scripts/install-claude-code.sh in CI), and a small core install.
- Behaviour: `query()` raises after yielding an error `ResultMessage`, it always uses
  `--input-format stream-json` plus a control protocol (an initialize request), and
  passes an empty system prompt unless told otherwise, so runs differ from the
  `claude -p` an operator tries by hand.
- What it offers that we do not use: `max_turns`, `max_budget_usd`, `resume`, `fork_
  session` are plain CLI flags (`args`, `--resume`); `interrupt()` and in-process
  hooks / MCP tools / permission callbacks have no place in an unattended loop.
Verdict: hand-parse; if in-process tools are ever wanted, add the SDK as an optional
extra for a separate kind rather than as a core dependency.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio

from supervisor.agents.base import (
    AgentFailed,
    AgentRequest,
    EventSend,
    SessionStarted,
    TextDelta,
    Usage,
    Waiting,
    emit,
    merge_text,
)
from supervisor.agents.kinds.claude_code import KIND, ClaudeCodeAgentSpec
from supervisor.agents.pricing import price_for
from supervisor.agents.stream_json import StreamJsonParser
from supervisor.agents.usagelimit import account_key
from supervisor.agents.watchdog import Watchdog
from supervisor.childenv import configured_env
from supervisor.process import KILL_GRACE_S, GroupProcess
from supervisor.spec import LoopSpec, Price

if TYPE_CHECKING:
    from supervisor.agents.kind import AgentContext

MAX_LINE = 32 * 1024 * 1024
"""A stream-json line can hold a whole file a tool read: never split one."""
MAX_ARGV_PROMPT = 100_000
"""Prompts longer than this (bytes) go on stdin: Linux caps one argv string at 128 KiB."""
RESULT_GRACE_S = 15.0
"""After its result line the CLI saves the session and exits; kill it if it lingers."""
STDERR_TAIL_LINES = 20


class ClaudeCodeAgent:
    """One per loop; keeps the last session id for `--resume` and step-in."""

    def __init__(self, spec: ClaudeCodeAgentSpec, loop: LoopSpec, ctx: AgentContext) -> None:
        self.spec = spec
        self.loop = loop
        self.ctx = ctx
        self._session_id: str | None = None
        self._session_usd: float | None = None
        """The session's cumulative `total_cost_usd` as last printed (resume fallback)."""
        self._fork_from: str | None = None
        """A session of another loop this one forks (`fork_session`): resumed with
        `--fork-session` until the CLI has given this loop a session of its own."""
        self._fork_at: str | None = None
        """The message of `_fork_from` the fork resumes at (`--resume-session-at`)."""
        self._session_at: str | None = None
        """The `uuid` of the last assistant message of the last turn (journalled with
        the session: a fork from that iteration resumes the session there)."""
        self._proc: GroupProcess | None = None

    # -- the Agent protocol --------------------------------------------------------
    @property
    def session_id(self) -> str | None:
        return self._session_id

    @property
    def session_cost_usd(self) -> float | None:
        """The session's cumulative `total_cost_usd` as the CLI last printed it."""
        return self._session_usd

    @property
    def session_at(self) -> str | None:
        """The last assistant message's `uuid` of the last turn (None: none seen)."""
        return self._session_at

    def restore(self, session_id: str | None, history: list[dict[str, Any]] | None) -> None:
        self._session_id = session_id
        self._session_usd = None
        self._fork_from = self._fork_at = self._session_at = None

    def fork_session(self, session_id: str, at: str | None = None) -> None:
        """Continue another loop's session as a branch of it (`fork.py`): the next turn
        runs `--resume=SESSION [--resume-session-at=AT] --fork-session`, so the CLI
        copies the conversation (up to message `at`: the session as it was after the
        forked iteration, not the turns it had later) into a new session and the other
        loop's session is left as it was."""
        self.restore(session_id, None)
        self._fork_from, self._fork_at = session_id, at

    @property
    def forking(self) -> str | None:
        """The parent's session while this fork has none of its own (step-in forks it
        too: `KIND.fork_flags`), else None."""
        return self._fork_from if self._fork_from == self._session_id else None

    @property
    def fork_at(self) -> str | None:
        """Where `forking` is cut (its message id; None: the whole session)."""
        return self._fork_at if self.forking is not None else None

    def conversation(self) -> list[dict[str, Any]] | None:
        return None  # the CLI keeps the conversation in its own session files

    def reset(self) -> None:
        self._session_id = None
        self._session_usd = None
        self._fork_from = self._fork_at = self._session_at = None

    async def aclose(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with anyio.CancelScope(shield=True):
                await proc.kill()

    # -- building the command --------------------------------------------------------
    def resume_id(self, request: AgentRequest | None = None) -> str | None:
        """The session the next turn continues (context = "continue", or a turn that a
        usage limit cut off running again: `request.resume`)."""
        if self.loop.context == "continue" or (request is not None and request.resume):
            return self._session_id
        return None

    def account(self) -> str:
        """Which login this agent spends (`usagelimit.account_key`): the CLI's config
        dir (CLAUDE_CONFIG_DIR, else HOME's .claude) and its credentials and endpoint.
        Loops whose agents share it share one subscription window."""
        env = {**os.environ, **self._env({})}
        home = env.get("HOME", "")
        config_dir = env.get("CLAUDE_CONFIG_DIR") or os.path.join(home, ".claude")
        secrets = ("CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
        parts = [config_dir, env.get("ANTHROPIC_BASE_URL", ""), *(env.get(k, "") for k in secrets)]
        return account_key(KIND.name, parts)

    def _env(self, supervisor: Mapping[str, str]) -> dict[str, str]:
        spec = self.spec
        return configured_env(
            pass_env=spec.pass_env, env=spec.env, supervisor=supervisor, kind_env=KIND.child_env
        )

    def command(self, prompt: str, *, resume: str | None = None) -> tuple[list[str], bytes | None]:
        """argv and stdin for one turn. The prompt goes after `--` (so a prompt starting
        with "-" is not read as an option, and variadic options in `args` such as
        `--allowedTools Write Bash` cannot swallow it), or on stdin when too long."""
        spec = self.spec
        argv = [spec.command, "-p", "--output-format", "stream-json", "--verbose"]
        if spec.partial_messages:
            argv.append("--include-partial-messages")
        if spec.model:
            argv += ["--model", spec.model]
        if resume:
            argv.append(f"--resume={resume}")  # one token: a value can't become a flag
            if resume == self._fork_from:
                argv += KIND.fork_flags(self._fork_at) if KIND.fork_flags else ()
        argv += spec.args
        data = prompt.encode()
        if len(data) > MAX_ARGV_PROMPT:
            return argv, data
        return [*argv, "--", prompt], None

    def price(self, model: str | None) -> Price | None:
        return price_for(model or self.spec.model, self.ctx.pricing)

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
        baseline = self._session_usd if resume and self._session_usd is not None else 0.0
        parser = StreamJsonParser(price=self.price, usd_baseline=baseline)
        watch = Watchdog(
            name="claude", timeout=spec.timeout, stall=spec.stall, result_grace=RESULT_GRACE_S
        )
        stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        cpu_reported = 0.0
        env = self._env(request.env)

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
                # Close `chunks()` here, in this task, never from a GC finalizer.
                async with contextlib.aclosing(proc.chunks()) as chunks:
                    async for chunk in chunks:
                        watch.saw_output()
                        if chunk.stream == "stderr":
                            stderr_tail.extend(chunk.lines()[-STDERR_TAIL_LINES:])
                            await emit(send, TextDelta(chunk.text, stream="stderr"))
                            continue
                        parsed = [e for line in chunk.lines() for e in parser.feed(line)]
                        for event in merge_text(parsed):
                            if isinstance(event, SessionStarted):
                                self._session_id = event.session_id
                            elif isinstance(event, Waiting) and event.seconds:
                                watch.allow_silence(event.seconds)
                            elif isinstance(event, Usage):
                                cpu = proc.sample_cpu()
                                event = dataclasses.replace(event, cpu_s=cpu - cpu_reported)
                                cpu_reported = cpu
                            await emit(send, event)
                        if parser.result is not None:
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
        self._session_at = parser.last_message_uuid  # of this turn's session, or None
        result = parser.result
        if result is not None:
            if result.session_id:
                self._session_id = result.session_id
            if result.total_cost_usd is not None:
                self._session_usd = result.total_cost_usd
        if watch.expired is not None and result is None:
            await emit(send, AgentFailed(watch.expired, retryable=True, output=parser.last_text))
            return
        final = parser.finish(code, "\n".join(stderr_tail))
        if isinstance(final, AgentFailed) and final.usage_limit is not None:
            limit = dataclasses.replace(final.usage_limit, account=self.account())
            final = dataclasses.replace(final, usage_limit=limit)
        if resume and parser.init is None and isinstance(final, AgentFailed):
            # The session could not be resumed at all ("No conversation found": another
            # HOME, deleted files): start a new one next time instead of failing again.
            self.reset()
            final = dataclasses.replace(
                final, message=f"{final.message} (session {resume} dropped; next turn starts anew)"
            )
        await emit(send, final)

    def _forget(self, proc: GroupProcess) -> None:
        if self._proc is proc:
            self._proc = None
