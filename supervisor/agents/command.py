"""Any CLI agent: `command = ["prog", "arg", "$prompt"]` or the prompt on stdin.

Placeholders are substituted inside single argv elements and the argv is executed
directly, never through a shell, so agent or prompt text can never become shell
syntax. The process runs in the loop's workspace in its own process group; stdout
and stderr stream into the transcript as they are read, one delta per pipe read.
A non-zero exit is an agent error that counts toward the loop's retries. Token usage
of an arbitrary CLI is unknown: only its CPU time is metered, unless it speaks the
usage protocol (`usage = "json-lines"`: `supervisor.agents.usage_lines`), whose lines
are charged as they are read and kept out of the output.
"""

from __future__ import annotations

import contextlib
import os
import string
import time
from pathlib import Path
from typing import Any

import anyio

from supervisor.agents.base import (
    AgentEvent,
    AgentFailed,
    AgentRequest,
    Done,
    EventSend,
    TextDelta,
    Usage,
    deliver,
    emit,
)
from supervisor.agents.kinds.command import CommandAgentSpec
from supervisor.agents.usage_lines import UsageLineFilter
from supervisor.childenv import configured_env
from supervisor.process import DRAIN_GRACE_S, GroupProcess
from supervisor.spec import LoopSpec
from supervisor.transcript import TextTail

OUTPUT_KEEP = 64 * 1024
"""Characters of stdout kept as the turn's output ($last_output, done marker)."""


class CommandAgent:
    def __init__(self, spec: CommandAgentSpec, loop: LoopSpec) -> None:
        self.spec = spec
        self.loop = loop
        self._uses_prompt_file = any(
            "prompt_file" in string.Template(arg).get_identifiers() for arg in spec.command
        )
        """A prompt file is written only for a command that names it: nothing else can
        see it (its path reaches the child through argv alone), and a command that
        does not read it paid a file's creation, write and removal every turn."""

    @property
    def session_id(self) -> str | None:
        return None

    def restore(self, session_id: str | None, history: list[dict[str, Any]] | None) -> None:
        return None

    def conversation(self) -> list[dict[str, Any]] | None:
        return None

    def reset(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def argv(self, request: AgentRequest, prompt_file: Path | None) -> list[str]:
        values = {
            "prompt": request.prompt,
            "loop": request.loop,
            "iteration": str(request.iteration),
            "workspace": str(request.workspace),
        }
        if prompt_file is not None:
            values["prompt_file"] = str(prompt_file)
        return [string.Template(arg).safe_substitute(values) for arg in self.spec.command]

    async def run(self, request: AgentRequest, send: EventSend) -> None:
        await request.budget.reserve(
            input_tokens=0, max_output_tokens=0, model=self.spec.model, minimum_output_tokens=0
        )
        if not self._uses_prompt_file:
            await self._run(request, None, send)
            return
        import tempfile  # here: most commands do not name $prompt_file (start-up, issue 12)

        fd, name = tempfile.mkstemp(prefix="loopvisor-prompt-", suffix=".txt")
        prompt_file = Path(name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(request.prompt)
            await self._run(request, prompt_file, send)
        finally:
            prompt_file.unlink(missing_ok=True)  # noqa: ASYNC240 (a tiny local temp file)

    async def _run(self, request: AgentRequest, prompt_file: Path | None, send: EventSend) -> None:
        spec = self.spec
        env = configured_env(pass_env=spec.pass_env, env=spec.env, supervisor=request.env)
        stdin = request.prompt.encode() if spec.stdin else None
        stdout = TextTail(OUTPUT_KEEP + 1)  # + its last newline
        last_stdout: str | None = None
        last_stderr: str | None = None
        started = time.monotonic()
        timed_out = False
        metered = UsageLineFilter() if spec.usage == "json-lines" else None
        async with contextlib.AsyncExitStack() as stack:
            try:
                proc = await stack.enter_async_context(
                    GroupProcess(
                        self.argv(request, prompt_file), cwd=request.workspace, env=env, stdin=stdin
                    )
                )
            except OSError as exc:
                failed = AgentFailed(f"could not start {spec.command[0]!r}: {exc.strerror or exc}")
                await emit(send, failed)
                return
            with anyio.move_on_after(spec.timeout) as scope:
                async with anyio.create_task_group() as tg:
                    with anyio.CancelScope() as reading:
                        tg.start_soon(_stop_reading_after_exit, proc, reading)
                        async for chunk in proc.chunks():  # one delta per read
                            if chunk.stream != "stdout":
                                last_stderr = chunk.text
                                await deliver(send, TextDelta(chunk.text, stream=chunk.stream))
                                continue
                            if metered is None:
                                parts: list[AgentEvent] = [TextDelta(chunk.text, "stdout")]
                            else:  # usage lines are charged, not shown
                                parts = metered.split(chunk.text)
                            for part in parts:
                                if isinstance(part, TextDelta) and part.stream == "stdout":
                                    stdout.add(part.text)
                                    last_stdout = part.text
                                # A chunk read is a chunk delivered, timeout or not.
                                await deliver(send, part)
                    code = await proc.wait()
                    tg.cancel_scope.cancel()
            if scope.cancelled_caught:
                timed_out = True
                await proc.kill()
            cpu = proc.sample_cpu()
        await emit(send, Usage(cpu_s=cpu))
        output = stdout.text().removesuffix("\n")
        if timed_out:
            await emit(
                send,
                AgentFailed(
                    f"{spec.command[0]} timed out after {time.monotonic() - started:.0f}s",
                    output=output,
                ),
            )
        elif code != 0:
            tail = _last_line(last_stderr if last_stderr is not None else last_stdout or "")[:300]
            failed = AgentFailed(
                f"{spec.command[0]} exited with code {code}: {tail}", output=output
            )
            await emit(send, failed)
        else:
            await emit(send, Done(output=output))


async def _stop_reading_after_exit(proc: GroupProcess, reading: anyio.CancelScope) -> None:
    """The turn is over when the agent's main process exits: a background child that
    inherited its stdout must not hold the turn open (it is killed with the group)."""
    await proc.wait()
    await anyio.sleep(DRAIN_GRACE_S)  # output still in the pipes
    reading.cancel()


def _last_line(text: str) -> str:
    """The last line of a chunk (`process.Chunk.text`: whole lines, newline-ended)."""
    return text.removesuffix("\n").rpartition("\n")[2]
