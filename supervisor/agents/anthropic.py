"""`kind = "anthropic"`: the Messages API through the official SDK, streamed.

One turn is a small agent loop: send the conversation, stream the reply (text deltas
reach the transcript as they arrive), run the tool calls it asks for in the
workspace, send the results, until the model stops or `max_turns` requests were made.

Budget. Before every request the agent reserves `input estimate + max_tokens` from
the loop's TurnBudget and clamps `max_tokens` to the grant, so output can never
overshoot. The input estimate must never be below the real input, or the reservation
would be short:
- first choice, `POST /v1/messages/count_tokens` (free, its own rate limit) plus a
  2 % margin (at least 8 tokens), since the API calls its count an estimate;
- when that endpoint is unavailable: the UTF-8 byte length of the request's JSON
  (system + messages + tools) plus 512. A token is never shorter than one byte, the
  JSON quoting and keys outweigh the per-message formatting tokens, and 512 covers
  the system prompt the API adds for tool use. Generous, but it cannot undercount.
Usage from `message_start` and `message_delta` (cumulative) is turned into deltas
and sent as it arrives, with the model named so that the loop prices it.

Time. `timeout` bounds one request from sending it to its last event, `stall` the
silence in it (the SDK's per-read timeout). A per-read timeout alone is no bound: a
server that pings every second keeps a request alive forever. The deadline is a
cancel scope around each await on the stream (never around a send to the turn, so an
event read is an event delivered); a request cut there is a timeout. One request,
streamed and classified, is `anthropic_request.Attempt`.

Errors. SDK retries are off; 429 (honouring retry-after), 529, 5xx, timeouts and
cut streams are retried here with capped exponential backoff and jitter, each
announced as `Waiting(retry=True)` so the loop counts it toward `retries` (and
ends the turn when they run out). Usage already seen on a failed attempt stays
charged once; streamed partial text stays in the transcript but not in the
conversation. Other 4xx end the turn as `AgentFailed(retryable=False)`. A 429 whose
retry-after is longer than `LONG_RETRY_AFTER_S` is an account's window rather than a
blip: the turn waits it out as `Waiting(long_limit=True)` (state `waiting`, cause
"rate_limit", no retry spent; a pause or stop still ends it) and sends the same request.

The API key comes from ANTHROPIC_API_KEY only and never appears in events or in a
request body: the `run` tool does not inherit it (`childenv`), and the context's
`Redactor` scrubs it (and every other secret) from tool results and from the replies
kept in the conversation, except signed thinking blocks, which must go back as sent.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import random
import ssl
import time
import uuid
from collections.abc import Mapping
from typing import Any

import anthropic
import anyio

from supervisor.agents.anthropic_request import Attempt, Overdue, before, http
from supervisor.agents.base import (
    AgentFailed,
    AgentRequest,
    Done,
    EventSend,
    Resumed,
    ToolCall,
    ToolResult,
    Waiting,
    emit,
)
from supervisor.agents.kind import AgentContext
from supervisor.agents.kinds.anthropic import PROVIDER, AnthropicAgentSpec
from supervisor.agents.ratelimit import RateLimiter
from supervisor.agents.tools import Workspace, tool_definitions
from supervisor.agents.usagelimit import reset_label
from supervisor.childenv import configured_env
from supervisor.spec import LoopSpec
from supervisor.textsafe import utf8

API_KEY_ENV = "ANTHROPIC_API_KEY"
SIGNED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
"""Reply blocks the API verifies when sent back: kept as they came (not redacted)."""
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
RETRY_AFTER_CAP_S = 900.0
LONG_RETRY_AFTER_S = 180.0
"""A 429 asking to wait longer than this is an account's window, not a blip: the turn
waits it out visibly (`Waiting(long_limit=True)`) without spending a retry."""
MAX_ATTEMPTS = 10
"""Consecutive failed attempts of one request before the turn fails on its own."""
COUNT_MARGIN = 0.02
COUNT_MARGIN_MIN = 8
FALLBACK_OVERHEAD = 512


class AnthropicAgent:
    """Implements the Agent protocol over `anthropic.AsyncAnthropic`."""

    def __init__(
        self,
        spec: AnthropicAgentSpec,
        loop: LoopSpec,
        ctx: AgentContext,
        *,
        backoff_base: float = BACKOFF_BASE_S,
        backoff_cap: float = BACKOFF_CAP_S,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.spec = spec
        self.loop = loop
        self.ctx = ctx
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_attempts = max_attempts
        self._tools = tool_definitions(spec.tools) if spec.tools else []
        self._messages: list[dict[str, Any]] = []
        self._session: str | None = None
        self._client: anthropic.AsyncAnthropic | None = None
        self._count_tokens_ok = True
        self._limiter: RateLimiter | None = (
            ctx.limiters.for_provider(PROVIDER) if ctx.limiters is not None else None
        )

    # -- protocol: state ---------------------------------------------------------
    @property
    def session_id(self) -> str | None:
        return self._session

    def conversation(self) -> list[dict[str, Any]] | None:
        if self.loop.context != "continue":
            return None
        return copy.deepcopy(self._messages)

    def restore(self, session_id: str | None, history: list[dict[str, Any]] | None) -> None:
        self._session = session_id
        self._messages = copy.deepcopy(history) if history else []

    def reset(self) -> None:
        self._messages = []
        self._session = None

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with anyio.CancelScope(shield=True):
                await client.close()

    # -- protocol: one turn --------------------------------------------------------
    async def run(self, request: AgentRequest, send: EventSend) -> None:
        spec = self.spec
        client = self._get_client()
        if client is None:
            await emit(send, AgentFailed(f"{API_KEY_ENV} is not set", retryable=False))
            return
        if self.loop.context == "continue" and self._session is None:
            self._session = f"api-{uuid.uuid4().hex[:12]}"
        self._append_user([{"type": "text", "text": request.prompt}])
        workspace = Workspace(
            request.workspace,
            enabled=spec.tools,
            run_timeout=spec.tool_timeout,
            env=configured_env(pass_env=spec.pass_env, env=spec.env, supervisor=request.env),
        )
        texts: list[str] = []
        stop_reason: str | None = None
        for round_no in range(1, max(1, spec.max_turns) + 1):
            params = self._params()
            estimate = await self._estimate_input(client, params)
            message: dict[str, Any] | None = None
            failures = 0
            while message is None:
                # Reserve before every attempt: a failed one may have used part of the
                # last reservation (a cut stream's input), and the retry needs it whole.
                granted = await request.budget.reserve(
                    input_tokens=estimate, max_output_tokens=spec.max_tokens, model=spec.model
                )
                params["max_tokens"] = max(1, min(spec.max_tokens, granted))
                attempt = Attempt(
                    client,
                    params,
                    estimate,
                    limiter=self._limiter,
                    deadline=self._deadline,
                    timeout=spec.timeout,
                )
                await attempt.run(send)
                if attempt.message is not None:
                    message = attempt.message
                    break
                failure = attempt.failure
                assert failure is not None
                if _long_limit(failure.reason, failure.retry_after):
                    assert failure.retry_after is not None
                    await self._wait_long(send, failure.retry_after)
                    continue
                failures += 1
                if not failure.retryable or failures >= self.max_attempts:
                    why = failure.reason if not failure.retryable else f"{failure.reason}; gave up"
                    failed = AgentFailed(
                        self._scrub(why),
                        retryable=failure.retryable,
                        output="".join(texts),
                        retry_after=failure.retry_after,
                    )
                    await emit(send, failed)
                    return
                delay = self._backoff(failures, failure.retry_after)
                await emit(send, Waiting(self._scrub(failure.reason), seconds=delay, retry=True))
                await anyio.sleep(delay)
                await emit(send, Resumed())
            content = [
                b if b.get("type") in SIGNED_BLOCKS else self.ctx.redactor.value(b)
                for b in message["content"]
            ]
            stop_reason = message["stop_reason"]
            if content:
                self._messages.append({"role": "assistant", "content": content})
            texts.extend(b["text"] for b in content if b.get("type") == "text")
            calls = [b for b in content if b.get("type") == "tool_use"]
            if not calls:
                break
            results = []
            for call in calls:
                await emit(send, ToolCall(call["id"], call["name"], dict(call.get("input") or {})))
                if stop_reason == "max_tokens":
                    output, is_error = "tool call cut off by max_tokens; not run", True
                else:
                    outcome = await workspace.call(call["name"], call.get("input") or {})
                    output, is_error = self._scrub(outcome.output), outcome.is_error
                await emit(send, ToolResult(call["id"], output, is_error))
                results.append(_tool_result(call["id"], output, is_error))
            self._messages.append({"role": "user", "content": results})
            if stop_reason != "tool_use":
                break
            if round_no == spec.max_turns:
                stop_reason = "max_turns"
        done = Done(
            output="\n".join(t for t in texts if t),
            session_id=self._session,
            stop_reason=stop_reason,
        )
        await emit(send, done)

    # -- helpers -------------------------------------------------------------------
    async def _wait_long(self, send: EventSend, seconds: float) -> None:
        """Wait out a long 429 (every loop of the provider waits with it: the shared
        limiter took the retry-after), then try the same request again."""
        label = reset_label(time.time() + seconds)
        why = f"rate limit (429), {label.replace('resets', 'retry at', 1)}"
        await emit(send, Waiting(why, seconds=seconds, long_limit=True))
        await anyio.sleep(seconds)
        await emit(send, Resumed())

    def _get_client(self) -> anthropic.AsyncAnthropic | None:
        if self._client is None:
            key = os.environ.get(API_KEY_ENV) or None
            if key is None:
                return None
            kwargs: dict[str, Any] = {"api_key": key, "max_retries": 0}
            if self.spec.base_url:
                kwargs["base_url"] = self.spec.base_url
            # Per read; the whole request is bounded by `timeout` in _Attempt.
            kwargs["timeout"] = (
                self.spec.stall if self.spec.stall is not None else self.spec.timeout
            )
            # The SDK's own HTTP client, but with the TLS context every loop shares.
            kwargs["http_client"] = anthropic.DefaultAsyncHttpxClient(
                timeout=kwargs["timeout"], verify=_tls_context()
            )
            self._client = anthropic.AsyncAnthropic(**kwargs)
        return self._client

    def _params(self) -> dict[str, Any]:
        spec = self.spec
        params: dict[str, Any] = {
            "model": spec.model,
            "max_tokens": spec.max_tokens,
            "messages": copy.deepcopy(self._messages),
        }
        if spec.system:
            params["system"] = spec.system
        if self._tools:
            params["tools"] = copy.deepcopy(self._tools)
        if spec.temperature is not None:
            params["temperature"] = spec.temperature
        return params

    def _append_user(self, blocks: list[dict[str, Any]]) -> None:
        """Add a user turn, keeping the conversation valid for the API: answer tool calls
        left open by an interrupted turn, and merge into a trailing user turn."""
        msgs = self._messages
        if msgs and msgs[-1].get("role") == "assistant":
            open_calls = [
                b["id"]
                for b in msgs[-1].get("content") or []
                if isinstance(b, dict) and b.get("type") == "tool_use"
            ]
            if open_calls:
                answers = [_tool_result(i, "interrupted: not run", True) for i in open_calls]
                msgs.append({"role": "user", "content": answers})
        if msgs and msgs[-1].get("role") == "user":
            last = msgs[-1]
            content = last.get("content")
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            last["content"] = [*(content or []), *blocks]
        else:
            msgs.append({"role": "user", "content": blocks})

    async def _estimate_input(
        self, client: anthropic.AsyncAnthropic, params: dict[str, Any]
    ) -> int:
        """Input tokens to reserve: never less than the API will charge (module doc)."""
        if self._count_tokens_ok:
            body = {k: params[k] for k in ("model", "messages", "system", "tools") if k in params}
            try:
                with before(self._deadline()):
                    counted = await client.messages.count_tokens(**body)
            except Overdue:
                pass  # this time, the safe bound
            except anthropic.NotFoundError:
                self._count_tokens_ok = False  # a proxy without the endpoint: don't ask again
            except (anthropic.APIError, http.TransportError):
                pass  # this time, the safe bound
            else:
                n = int(counted.input_tokens)
                return n + max(COUNT_MARGIN_MIN, int(n * COUNT_MARGIN) + 1)
        return input_upper_bound(params)

    def _deadline(self) -> float:
        """When a request starting now must be over (`timeout` from now; inf when off)."""
        timeout = self.spec.timeout
        return math.inf if timeout is None else anyio.current_time() + timeout

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), RETRY_AFTER_CAP_S)
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** (failures - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _scrub(self, text: str) -> str:
        return self.ctx.redactor.text(text)


def _long_limit(reason: str, retry_after: float | None) -> bool:
    return reason.startswith("rate-limited") and (retry_after or 0.0) > LONG_RETRY_AFTER_S


def _tool_result(tool_id: str, output: str, is_error: bool) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_id, "content": output}
    if is_error:
        block["is_error"] = True
    return block


def input_upper_bound(params: Mapping[str, Any]) -> int:
    """Input tokens a request can never exceed: UTF-8 bytes of its JSON plus overhead."""
    payload = {k: params.get(k) for k in ("system", "messages", "tools")}
    raw = utf8(json.dumps(payload, ensure_ascii=False))
    return len(raw) + FALLBACK_OVERHEAD


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for the clients of every loop, made as the SDK makes its own
    (the system's CA certificates; `SSL_CERT_FILE` / `SSL_CERT_DIR` honoured). Making
    one loads those certificates, ~30 ms of CPU: the SDK made one per client, i.e. per
    loop, a third of a 10-loop run's CPU (issue 12, the API path)."""
    return http.create_ssl_context()
