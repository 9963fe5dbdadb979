"""The built-in simulated agent: offline, deterministic, and judged by real checks.

It streams plausible text token by token at `rate` tokens/s, reports usage like a
real model (input from the prompt, output per token, clamped to the budget grant),
and writes files into the workspace so that the supervisor's own checks decide
whether it converged. Behaviours: converge after N iterations, stay stuck (same
output, same wrong files), oscillate between two wrong answers, stall (stop
emitting), or fail (crash). The same seed, loop and iteration give the same text.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import anyio

from supervisor.agents.base import (
    AgentFailed,
    AgentRequest,
    Done,
    EventSend,
    TextDelta,
    Usage,
    emit,
    estimate_tokens,
)
from supervisor.agents.kinds.sim import SimAgentSpec
from supervisor.spec import LoopSpec

_OPENERS = (
    "Looking at the last check output,",
    "Reading the workspace first:",
    "The failure points at",
    "Let me reason about the edge cases:",
    "Next step:",
    "I traced the problem to",
)
_WORDS = (
    "the parser",
    "an off-by-one",
    "the boundary case",
    "input validation",
    "the helper",
    "the return value",
    "a missing branch",
    "the loop invariant",
    "error handling",
    "the fixture",
    "string formatting",
    "the empty input",
    "rounding",
    "the test",
    "should",
    "now",
    "handles",
    "returns",
    "checks",
    "before",
    "after",
    "instead of",
    "so that",
    "which means",
    "I will update",
    "and re-run",
    "carefully",
    "the module",
)
_USAGE_EVERY = 16
"""Report output usage every this many tokens, so budgets see a long reply live."""
_CATCH_UP_S = 1.0
"""How far behind its rate the stream may fall and still catch up in a burst."""


class SimAgent:
    """Implements the Agent protocol without any network or key."""

    def __init__(self, spec: SimAgentSpec, loop: LoopSpec) -> None:
        self.spec = spec
        self.loop = loop
        self._session: str | None = None
        self._turns = 0

    @property
    def session_id(self) -> str | None:
        return self._session

    def restore(self, session_id: str | None, history: list[dict[str, Any]] | None) -> None:
        self._session = session_id

    def conversation(self) -> list[dict[str, Any]] | None:
        return None

    def reset(self) -> None:
        self._session = None

    async def aclose(self) -> None:
        return None

    # -- one turn ------------------------------------------------------------
    async def run(self, request: AgentRequest, send: EventSend) -> None:
        spec = self.spec
        n = request.iteration
        self._turns += 1
        if self.loop.context == "continue" and self._session is None:
            self._session = f"sim-{self.loop.name}-{spec.seed}"
        input_tokens = spec.input_tokens or estimate_tokens(request.prompt)
        granted = await request.budget.reserve(
            input_tokens=input_tokens,
            max_output_tokens=spec.reply_tokens + len(_done_tokens(spec.done_text)),
            usd_per_token=spec.usd_per_mtok / 1_000_000,
        )
        await emit(send, Usage(input_tokens=input_tokens, usd=self._usd(input_tokens)))

        converged = spec.behavior == "converge" and n >= spec.converge_after
        tokens = self._reply(n, converged)
        stop_reason = "end_turn"
        if len(tokens) > granted:
            tokens, stop_reason = tokens[:granted], "max_tokens"
        fails = spec.behavior == "fail" and n >= spec.stall_after
        stalls = spec.behavior == "stall" and n >= spec.stall_after
        if fails or stalls:
            tokens = tokens[: max(1, len(tokens) // 3)]

        emitted: list[str] = []
        unreported = 0
        delay = 1.0 / spec.rate if spec.rate > 0 else 0.0
        due = time.monotonic()  # the event loop's clock (anyio's asks sniffio each time)
        for token in tokens:
            if delay:
                due = await _paced(due + delay)
            emitted.append(token)
            unreported += 1
            await emit(send, TextDelta(token))
            if unreported >= _USAGE_EVERY:
                await emit(send, Usage(output_tokens=unreported, usd=self._usd(unreported)))
                unreported = 0
        if unreported:
            await emit(send, Usage(output_tokens=unreported, usd=self._usd(unreported)))

        if stalls:
            await anyio.sleep_forever()
        if fails:
            await emit(
                send,
                AgentFailed(f"simulated agent crashed in iteration {n}", output="".join(emitted)),
            )
            return

        self._write_files(request.workspace, n, converged)
        await emit(
            send, Done(output="".join(emitted), session_id=self._session, stop_reason=stop_reason)
        )

    # -- helpers -------------------------------------------------------------
    def _usd(self, tokens: int) -> float:
        return tokens * self.spec.usd_per_mtok / 1_000_000

    def _reply(self, iteration: int, converged: bool) -> list[str]:
        spec = self.spec
        if spec.behavior == "stuck":
            variant = 0
        elif spec.behavior == "oscillate":
            variant = iteration % 2
        else:
            variant = iteration
        rng = random.Random(f"{spec.seed}:{self.loop.name}:{variant}")
        phrases: list[str] = [rng.choice(_OPENERS)]
        while len(phrases) < spec.reply_tokens:
            phrase = rng.choice(_WORDS)
            if rng.random() < 0.08:
                phrase += "."
            phrases.append(phrase)
        # One token a word (with its following space), as a model would stream it.
        words = " ".join(phrases).split(" ")[: spec.reply_tokens]
        tokens = [w + " " for w in words]
        tokens[-1] = words[-1] + "\n"
        if converged and spec.done_text:
            tokens += _done_tokens(spec.done_text)
        return tokens

    def _write_files(self, workspace: Path, iteration: int, converged: bool) -> None:
        spec = self.spec
        if converged:
            files = spec.files
        elif spec.behavior == "oscillate" and iteration % 2 == 0 and spec.alt_files:
            files = spec.alt_files
        else:
            files = spec.draft_files
        for rel, content in files.items():
            path = workspace / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")


async def _paced(due: float) -> float:
    """Wait until the next token is `due` (by the clock) and return when it came.

    A token that is due already comes without a sleep, as a model's stream does for a
    reader that fell behind (the tokens wait in its socket): a sleep per token made a
    busy supervisor pay a timer and a wake-up per token, and each token then reached
    the turn on its own, one output event apiece, which made it busier still. A wait
    that overran by more than `_CATCH_UP_S` is not made up: the stream goes on from now
    (a loop held up for long does not get its reply in one burst)."""
    now = time.monotonic()
    if due > now:
        await anyio.sleep(due - now)
        return due
    return max(due, now - _CATCH_UP_S)


def _done_tokens(text: str) -> list[str]:
    if not text:
        return []
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1] + "\n"]
