"""One streamed Messages API request of the `anthropic` agent (`anthropic.py`).

`Attempt` sends a request and streams its reply: text deltas and usage deltas go to
the turn as they arrive, the reply's blocks are collected for the conversation, and
whatever ends it early is classified as a `Failure` (retryable or not) instead of
raised. `before` bounds each await on the stream by the request's total deadline
(never a send to the turn, so an event read is an event delivered).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anthropic
import anyio
from anthropic.types import (
    CitationsDelta,
    InputJSONDelta,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    SignatureDelta,
    ThinkingDelta,
)
from anthropic.types import TextDelta as SDKTextDelta

from supervisor.agents.base import EventSend, Resumed, TextDelta, Usage, Waiting, deliver, emit
from supervisor.agents.ratelimit import RateLimiter, retry_after_seconds
from supervisor.agents.usage import Tokens
from supervisor.textsafe import json_loads, valid_data, valid_text

try:  # the SDK's HTTP stack: httpx2 (anthropic >= 2) or httpx (older)
    import httpx2 as http
except ImportError:  # pragma: no cover
    import httpx as http  # type: ignore[no-redef, import-not-found, unused-ignore]

__all__ = ["TRANSPORT_ERRORS", "Attempt", "Failure", "Overdue", "before", "classify_status", "http"]

LIMITER_NOTICE_S = 0.5
"""Announce a rate-limiter wait as `Waiting` only from this many seconds on."""
_RETRYABLE_TYPES = {"rate_limit_error", "overloaded_error", "api_error", "timeout_error"}
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    http.TransportError,
    anthropic.APIConnectionError,
)


class Overdue(Exception):
    """The request's total deadline (`timeout`) passed."""


@contextmanager
def before(deadline: float) -> Iterator[None]:
    """Run the block (which must not send to the turn) until `deadline`, else Overdue."""
    with anyio.CancelScope(deadline=deadline) as scope:
        yield
    if scope.cancelled_caught:
        raise Overdue


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt, classified."""

    reason: str
    retryable: bool
    retry_after: float | None = None


class Attempt:
    """One streamed request: sends text and usage; ends with `message` or `failure`."""

    def __init__(
        self,
        client: anthropic.AsyncAnthropic,
        params: dict[str, Any],
        estimate: int,
        *,
        limiter: RateLimiter | None,
        deadline: Callable[[], float],
        timeout: float | None,
    ) -> None:
        self.client = client
        self.params = params
        self.estimate = estimate
        self.limiter = limiter
        self.deadline = deadline
        """When a request starting now must be over (`timeout` from now)."""
        self.timeout = timeout
        self.message: dict[str, Any] | None = None
        self.failure: Failure | None = None

    async def run(self, send: EventSend) -> None:
        model = str(self.params["model"])
        limiter = self.limiter
        wanted = self.estimate + int(self.params["max_tokens"])
        counted = Tokens()
        if limiter is not None:
            wait = limiter.estimate_wait(wanted)
            announce = wait >= LIMITER_NOTICE_S
            if announce:
                await emit(
                    send, Waiting(f"rate limit: {limiter.describe()}", seconds=round(wait, 1))
                )
            await limiter.acquire(wanted)
            if announce:
                await emit(send, Resumed())
        blocks: dict[int, dict[str, Any]] = {}
        json_parts: dict[int, list[str]] = {}
        text_parts: dict[int, list[str]] = {}
        stop_reason: str | None = None
        deadline = self.deadline()
        try:
            with before(deadline):
                stream = await self.client.messages.create(**self.params, stream=True)
            async with stream:
                if limiter is not None:
                    limiter.observe_headers(stream.response.headers)
                # One deadline scope for the whole read (a scope per event was a timer
                # and a generator per token: issue 12, the API path). What is sent to
                # the turn inside it is delivered even if the deadline passes meanwhile
                # (`deliver`); the stream is closed outside it.
                with anyio.CancelScope(deadline=deadline) as reading:
                    async for event in stream:
                        if isinstance(event, RawMessageStartEvent):
                            counted, delta = _advance(counted, event.message.usage, model)
                            if delta is not None:
                                await deliver(send, delta)
                        elif isinstance(event, RawContentBlockStartEvent):
                            blocks[event.index] = _start_block(event.content_block)
                        elif isinstance(event, RawContentBlockDeltaEvent):
                            d = event.delta
                            block = blocks.setdefault(event.index, {"type": "text", "text": ""})
                            if isinstance(d, SDKTextDelta):
                                # Valid at the door: the text goes to the journal, to
                                # every printer and back to the API in the next request.
                                piece = valid_text(d.text)
                                text_parts.setdefault(event.index, []).append(piece)
                                # Redacted by the turn, split secrets too.
                                await deliver(send, TextDelta(piece))
                            elif isinstance(d, InputJSONDelta):
                                json_parts.setdefault(event.index, []).append(d.partial_json)
                            elif isinstance(d, ThinkingDelta):
                                # Kept (with its signature): tool rounds send it back.
                                block["thinking"] = block.get("thinking", "") + d.thinking
                            elif isinstance(d, SignatureDelta):
                                block["signature"] = block.get("signature", "") + d.signature
                            elif isinstance(d, CitationsDelta):
                                cite = d.citation.model_dump(mode="json", exclude_none=True)
                                block.setdefault("citations", []).append(cite)
                        elif isinstance(event, RawMessageDeltaEvent):
                            stop_reason = event.delta.stop_reason
                            counted, delta = _advance(counted, event.usage, model)
                            if delta is not None:
                                await deliver(send, delta)
                if reading.cancelled_caught:
                    raise Overdue
        except anthropic.APIStatusError as exc:
            self.failure = classify_status(exc)
            if limiter is not None:
                limiter.observe_headers(exc.response.headers)
        except Overdue:
            took = f"the request took longer than {self.timeout:g}s"
            self.failure = Failure(f"timed out: {took}", retryable=True)
        except anthropic.APITimeoutError:
            self.failure = Failure("timed out", retryable=True)
        except http.TimeoutException:
            self.failure = Failure("timed out mid-stream", retryable=True)
        except TRANSPORT_ERRORS as exc:
            self.failure = Failure(f"connection lost ({type(exc).__name__})", retryable=True)
        finally:
            if limiter is not None:
                limiter.refund(wanted - counted.total)
        if self.failure is not None:
            if blocks:
                await emit(
                    send, TextDelta(f"\n[{self.failure.reason}; reply discarded]\n", stream="raw")
                )
            return
        if stop_reason is None:
            # The body ended without message_delta: a stream cut that closed cleanly.
            self.failure = Failure("stream ended early", retryable=True)
            return
        content: list[dict[str, Any]] = []
        for index in sorted(blocks):
            block = blocks[index]
            if index in text_parts:  # joined once (adding each delta copied the text so far)
                block["text"] = block.get("text", "") + "".join(text_parts[index])
            if index in json_parts:  # tool_use (or a server tool's) streamed input
                raw = "".join(json_parts[index])
                try:
                    block["input"] = json_loads(raw) if raw else {}
                except ValueError:
                    block["input"] = {"_unparsed": raw}
            if block["type"] == "text" and not block["text"]:
                continue  # the API refuses empty text blocks when they are sent back
            content.append(block)
        self.message = {"content": content, "stop_reason": stop_reason}


def _start_block(block: Any) -> dict[str, Any]:
    if block.type == "text":
        return {"type": "text", "text": ""}
    if block.type == "tool_use":
        return {
            "type": "tool_use",
            "id": valid_text(block.id),
            "name": valid_text(block.name),
            "input": {},
        }
    dumped: dict[str, Any] = valid_data(block.model_dump(mode="json", exclude_none=True))
    return dumped


def classify_status(exc: anthropic.APIStatusError) -> Failure:
    status = exc.status_code
    kind, detail = _error_body(exc.body)
    retry_after = retry_after_seconds(exc.response.headers)
    if status == 429 or kind == "rate_limit_error":
        return Failure("rate-limited (429)", True, retry_after)
    if status == 529 or kind == "overloaded_error":
        return Failure("overloaded (529)", True, retry_after)
    if status >= 500 or status in (408, 409) or kind in _RETRYABLE_TYPES:
        return Failure(f"server error ({status}{', ' + kind if kind else ''})", True, retry_after)
    text = f"{status} {kind or type(exc).__name__}"
    if detail:
        text += f": {detail}"
    return Failure(f"API error {text}", False)


def _error_body(body: object) -> tuple[str | None, str | None]:
    if isinstance(body, Mapping):
        err = body.get("error")
        if isinstance(err, Mapping):
            kind, message = err.get("type"), err.get("message")
            return (
                kind if isinstance(kind, str) else None,
                message if isinstance(message, str) else None,
            )
    return None, None


def _advance(counted: Tokens, usage: Any, model: str) -> tuple[Tokens, Usage | None]:
    """Turn the API's cumulative usage of one response into the delta since `counted`."""
    growth = counted.growth_to(Tokens.from_sdk(usage))
    return counted + growth, (growth.as_usage(model=model) if growth.total else None)
