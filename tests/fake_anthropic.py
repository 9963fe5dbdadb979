"""A fake Anthropic Messages API on 127.0.0.1 for tests (stdlib only, real HTTP + SSE).

The official SDK and the Claude Code CLI talk to it exactly as to the real API, so
tests exercise the real client stack. Usage:

    from fake_anthropic import FakeAnthropic, text, tool_use, error, hang, cut

    with FakeAnthropic([tool_use("write_file", {"path": "a", "content": "x"}),
                        text("done")]) as server:
        env = {"ANTHROPIC_BASE_URL": server.base_url, "ANTHROPIC_API_KEY": "sk-test"}
        ...
        assert server.totals.input_tokens == ledger_input_tokens
        assert server.requests[1].body["messages"][-1]["content"][0]["type"] == "tool_result"

(`tests/` is on sys.path under pytest, hence `from fake_anthropic import ...`.)
The `fake_anthropic` pytest fixture yields a started server; import it into a test
module (`from fake_anthropic import fake_anthropic`) to use it.

Public surface (kept backward compatible):
- `FakeAnthropic(replies=(), *, default=None, ratelimit=None, count_tokens=True,
  model=None)`; `start()` / `stop()` or a `with` block; `base_url`, `port`;
  `push(*replies)`, `pending`; `requests` (every `RecordedRequest`: method, path with
  query, lower-cased headers, parsed JSON body, what was replied), `message_requests()`;
  `totals` (`Totals`: input_tokens, output_tokens, cache_creation_input_tokens,
  cache_read_input_tokens, messages, tokens); `rate_limited` (enforced 429s).
- Replies: `text(s, cache_creation=, cache_read=, chunk_words=, delay=, thinking=)`,
  `tool_use(name, input, preface=, id=, more=[(name, input), ...], thinking=)`,
  `error(status, message, retry_after=, retry_after_ms=, headers=)` (429, 529, 500, 401...),
  `usage_limit(reset_epoch, window)` (a Pro/Max window refusal),
  `hang(seconds, after_start=False)`, `drip(every)` (message_start, then an SSE ping
  every `every` seconds, forever: alive but never done), `cut(s, after=N)`
  (connection closed after N deltas), `stream_error(type, s, after=N)` (an SSE
  `error` event mid-stream). Each takes `when=lambda body: ...` to answer only
  matching requests (e.g. by model).
- Token arithmetic: `input_tokens_for(body)`, `tokens_for_text(s)`, `tokens_for_json(v)`.

Behaviour:
- Every POST /v1/messages (query such as `?beta=true` ignored) pops the next scripted
  reply whose `when` matches the request body (default: any), else `server.default`
  (a short text). Extra request fields are accepted and recorded.
- Streaming (`"stream": true`) sends real SSE: message_start (usage: input and cache
  tokens, output_tokens 1), ping, content_block_start / _delta / _stop per block,
  message_delta (stop_reason, cumulative usage), message_stop. Otherwise a JSON Message.
- Input tokens are a deterministic function of the request, `input_tokens_for(body)`
  (JSON of system + messages + tools, 4 characters a token, plus 1). A reply's cache
  tokens are carved out of that count, so input + cache_creation + cache_read always
  equals it. POST /v1/messages/count_tokens returns the same count (unless disabled).
- Output tokens: one per whitespace-separated word of text or thinking (with its
  trailing whitespace), and `tokens_for_json` of a tool_use input. The request's `max_tokens` is
  honoured: output never exceeds it, the reply is truncated with stop_reason
  "max_tokens" (a tool_use block that does not fit entirely is dropped).
- `totals` is the server's own bill: the usage it reported in each response (for a
  stream cut, ended by an error event or hung after message_start: that
  message_start usage only).
- Optional `anthropic-ratelimit-*` headers (`ratelimit=RateLimitWindow(...)`): like the
  real API, a token bucket per dimension that holds a full `window`'s allowance and
  refills continuously; with `enforce=True` a request finding the requests bucket empty
  (or the tokens bucket below zero) gets a 429 with retry-after.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

__all__ = [
    "FakeAnthropic",
    "RateLimitWindow",
    "RecordedRequest",
    "Reply",
    "Totals",
    "cut",
    "drip",
    "error",
    "fake_anthropic",
    "hang",
    "input_tokens_for",
    "json_reply",
    "stream_error",
    "text",
    "tokens_for_json",
    "tokens_for_text",
    "tool_use",
    "usage_limit",
]

ReplyKind = Literal["message", "error", "hang", "drip"]

_WORD = re.compile(r"\S+\s*|\s+")

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


# -- token arithmetic (public so that tests can predict numbers) ------------------
def input_tokens_for(body: Mapping[str, Any]) -> int:
    """The input tokens the fake charges for a request (or counts in count_tokens)."""
    payload = {k: body.get(k) for k in ("system", "messages", "tools")}
    return len(json.dumps(payload, sort_keys=True, ensure_ascii=False)) // 4 + 1


def text_pieces(s: str) -> list[str]:
    """The fake's tokens of a text: words with their trailing whitespace."""
    return _WORD.findall(s)


def tokens_for_text(s: str) -> int:
    return len(text_pieces(s))


def tokens_for_json(value: Any) -> int:
    return len(json.dumps(value)) // 4 + 1


# -- scripted replies --------------------------------------------------------------
@dataclass(frozen=True)
class TextBlock:
    text: str


@dataclass(frozen=True)
class ThinkingBlock:
    thinking: str
    signature: str = "fake-signature"


@dataclass(frozen=True)
class ToolUseBlock:
    name: str
    input: dict[str, Any]
    id: str


Block = TextBlock | ThinkingBlock | ToolUseBlock


@dataclass(frozen=True)
class Reply:
    """One scripted response. Build it with `text`, `tool_use`, `error`, `hang`, `cut`."""

    kind: ReplyKind = "message"
    blocks: tuple[Block, ...] = ()
    stop_reason: str = "end_turn"
    cache_creation: int = 0
    cache_read: int = 0
    chunk_words: int = 1
    """Words per text_delta event."""
    delay: float = 0.0
    """Seconds between SSE events (to observe streaming)."""
    cut_after: int | None = None
    """Close the connection (mid chunked body) after this many content deltas."""
    error_event: str | None = None
    """With cut_after: send an SSE `error` event of this type there instead of cutting."""
    status: int = 200
    error_message: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    hang_seconds: float = 0.0
    hang_after_start: bool = False
    """Hang after message_start (usage sent) instead of before the response headers."""
    drip_every: float = 0.0
    """kind "drip": seconds between the pings sent after message_start, until stopped."""
    when: Callable[[Mapping[str, Any]], bool] | None = None
    """Only answer requests whose parsed body matches; others skip this reply."""


def text(
    s: str = "Hello from the fake.",
    *,
    stop_reason: str = "end_turn",
    cache_creation: int = 0,
    cache_read: int = 0,
    chunk_words: int = 1,
    delay: float = 0.0,
    thinking: str = "",
    when: Callable[[Mapping[str, Any]], bool] | None = None,
) -> Reply:
    """A text reply (stop_reason "end_turn" unless max_tokens truncates it), after a
    thinking block (streamed with thinking_delta and a signature_delta) if given."""
    return Reply(
        blocks=(*_thinking(thinking), TextBlock(s)),
        stop_reason=stop_reason,
        cache_creation=cache_creation,
        cache_read=cache_read,
        chunk_words=chunk_words,
        delay=delay,
        when=when,
    )


def tool_use(
    name: str,
    input: Mapping[str, Any],
    *,
    preface: str = "",
    id: str | None = None,
    more: Sequence[tuple[str, Mapping[str, Any]]] = (),
    delay: float = 0.0,
    thinking: str = "",
    when: Callable[[Mapping[str, Any]], bool] | None = None,
) -> Reply:
    """A reply that asks for one tool call (plus `more` (name, input) calls), with an
    optional thinking block and text block first; stop_reason "tool_use"."""
    blocks: list[Block] = [*_thinking(thinking)]
    if preface:
        blocks.append(TextBlock(preface))
    calls = [(name, input), *more]
    for i, (tool_name, tool_input) in enumerate(calls):
        tool_id = id if (id is not None and i == 0) else f"toolu_{uuid.uuid4().hex[:20]}"
        blocks.append(ToolUseBlock(tool_name, dict(tool_input), tool_id))
    return Reply(blocks=tuple(blocks), stop_reason="tool_use", delay=delay, when=when)


def _thinking(thinking: str) -> tuple[ThinkingBlock, ...]:
    return (ThinkingBlock(thinking, f"sig-{uuid.uuid4().hex[:16]}"),) if thinking else ()


def error(
    status: int,
    message: str | None = None,
    *,
    retry_after: float | None = None,
    retry_after_ms: float | None = None,
    headers: Mapping[str, str] | None = None,
    when: Callable[[Mapping[str, Any]], bool] | None = None,
) -> Reply:
    """An HTTP error with the API's JSON error body (429 rate_limit_error, 529 overloaded...)."""
    extra = dict(headers or {})
    if retry_after is not None:
        extra["retry-after"] = f"{retry_after:g}"
    if retry_after_ms is not None:
        extra["retry-after-ms"] = f"{retry_after_ms:g}"
    return Reply(
        kind="error",
        status=status,
        error_message=message or f"fake {status}",
        headers=extra,
        when=when,
    )


Matcher = Callable[[Mapping[str, Any]], bool]


def usage_limit(reset: int, window: str = "five_hour", *, when: Matcher | None = None) -> Reply:
    """A subscription usage-limit refusal, as the API answers a Pro/Max login over its
    5-hour (`window="five_hour"`) or weekly (`"seven_day"`) window: 429 with
    `anthropic-ratelimit-unified-status: rejected` and the reset epoch. Claude Code
    reads it as a usage limit only when logged in with an OAuth token
    (`CLAUDE_CODE_OAUTH_TOKEN`); with an API key it is a plain 429."""
    short = "5h" if window == "five_hour" else "7d"
    headers = {
        "anthropic-ratelimit-unified-status": "rejected",
        "anthropic-ratelimit-unified-reset": str(reset),
        "anthropic-ratelimit-unified-representative-claim": window,
        f"anthropic-ratelimit-unified-{short}-status": "rejected",
        f"anthropic-ratelimit-unified-{short}-reset": str(reset),
        f"anthropic-ratelimit-unified-{short}-utilization": "1.0",
        "anthropic-ratelimit-unified-overage-status": "rejected",
        "anthropic-ratelimit-unified-overage-disabled-reason": "org_level_disabled",
    }
    message = "This request would exceed your account's rate limit. Please try again later."
    return error(429, message, headers=headers, when=when)


def hang(seconds: float = 30.0, *, after_start: bool = False, when: Matcher | None = None) -> Reply:
    """Say nothing for `seconds` (the client should time out first); with `after_start`,
    only after message_start (its usage is billed) and a ping."""
    return Reply(kind="hang", hang_seconds=seconds, hang_after_start=after_start, when=when)


def drip(every: float = 0.3, *, when: Matcher | None = None) -> Reply:
    """message_start (its usage billed), then an SSE ping every `every` seconds until the
    client hangs up or the server stops: a stream that is never silent and never done."""
    return Reply(kind="drip", drip_every=every, when=when)


def cut(
    s: str = "This stream will be cut off half way through.",
    *,
    after: int = 3,
    when: Matcher | None = None,
) -> Reply:
    """Stream `s` but close the connection after `after` text deltas (no message_delta)."""
    return Reply(blocks=(TextBlock(s),), cut_after=after, when=when)


def stream_error(
    error_type: str = "overloaded_error",
    s: str = "This stream ends in an error event half way through.",
    *,
    after: int = 3,
    when: Matcher | None = None,
) -> Reply:
    """Stream `s`, then after `after` text deltas an SSE `event: error` (as the API does
    when it is overloaded mid-stream) and the end of the body."""
    return Reply(blocks=(TextBlock(s),), cut_after=after, error_event=error_type, when=when)


def json_reply(s: str = "Hello from the fake.") -> Reply:
    """Alias of `text`: a non-streaming request gets the same plan as one JSON Message."""
    return text(s)


# -- records -----------------------------------------------------------------------
@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    """Including the query string, e.g. "/v1/messages?beta=true"."""
    headers: dict[str, str]
    """Lower-cased names."""
    body: dict[str, Any]
    """Parsed JSON ({} when there was none)."""
    reply: str
    """What the server did: "text", "tool_use", "error 429", "hang", "cut", "count_tokens"..."""

    @property
    def route(self) -> str:
        return self.path.split("?", 1)[0]


@dataclass
class Totals:
    """Usage the server reported, summed over all responses."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    messages: int = 0
    """Responses that reported usage."""

    @property
    def tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_input_tokens
            + self.cache_read_input_tokens
        )


@dataclass(frozen=True)
class RateLimitWindow:
    """Limits advertised in `anthropic-ratelimit-*` headers (and enforced if asked).

    Token buckets as the API documents them: each holds `requests` / `tokens` and
    refills that much every `window` seconds, continuously."""

    requests: int = 50
    tokens: int = 100_000
    """Input + output tokens (also sent as input-tokens-* headers)."""
    window: float = 60.0
    enforce: bool = False
    """Answer 429 (retry-after = seconds until a request fits) when a bucket is empty."""


# -- the server --------------------------------------------------------------------
class FakeAnthropic:
    """The fake API server. Start with `with FakeAnthropic(...) as server:` or `start()`."""

    def __init__(
        self,
        replies: Sequence[Reply] = (),
        *,
        default: Reply | None = None,
        ratelimit: RateLimitWindow | None = None,
        count_tokens: bool = True,
        model: str | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._queue: list[Reply] = list(replies)
        self.default = default or text()
        self.ratelimit = ratelimit
        self.count_tokens_enabled = count_tokens
        self.model = model
        """Model id reported in replies (default: the request's model)."""
        self.requests: list[RecordedRequest] = []
        self.totals = Totals()
        self.rate_limited = 0
        """429s sent by limit enforcement (not scripted ones)."""
        self._stop = threading.Event()
        self._bucket_time = time.monotonic()
        self._bucket_requests = float(ratelimit.requests) if ratelimit else 0.0
        self._bucket_tokens = float(ratelimit.tokens) if ratelimit else 0.0
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> FakeAnthropic:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-anthropic"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd.close_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """For ANTHROPIC_BASE_URL / AsyncAnthropic(base_url=...)."""
        return f"http://127.0.0.1:{self.port}"

    # -- scripting ---------------------------------------------------------------
    def push(self, *replies: Reply) -> None:
        """Append scripted replies to the queue."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def message_requests(self) -> list[RecordedRequest]:
        """Recorded POST /v1/messages requests (not count_tokens or others)."""
        with self._lock:
            return [r for r in self.requests if r.route == "/v1/messages"]

    # -- internals used by the handler -------------------------------------------
    def _next_reply(self, body: Mapping[str, Any]) -> Reply:
        with self._lock:
            for i, reply in enumerate(self._queue):
                if reply.when is None or reply.when(body):
                    return self._queue.pop(i)
            return self.default

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(req)

    def _bill(self, usage: Mapping[str, int]) -> None:
        with self._lock:
            t = self.totals
            t.input_tokens += usage.get("input_tokens", 0)
            t.output_tokens += usage.get("output_tokens", 0)
            t.cache_creation_input_tokens += usage.get("cache_creation_input_tokens", 0)
            t.cache_read_input_tokens += usage.get("cache_read_input_tokens", 0)
            t.messages += 1

    def _refill(self) -> None:
        """Top the buckets up for the time passed (call with the lock held)."""
        assert self.ratelimit is not None
        rl = self.ratelimit
        now = time.monotonic()
        elapsed, self._bucket_time = now - self._bucket_time, now
        self._bucket_requests = min(
            rl.requests, self._bucket_requests + elapsed * rl.requests / rl.window
        )
        self._bucket_tokens = min(rl.tokens, self._bucket_tokens + elapsed * rl.tokens / rl.window)

    def _admit(self, input_tokens: int) -> float | None:
        """Take a request (and its input tokens) from the buckets; or the seconds to wait."""
        if self.ratelimit is None:
            return None
        with self._lock:
            self._refill()
            rl = self.ratelimit
            if rl.enforce and (self._bucket_requests < 1 or self._bucket_tokens < 0):
                self.rate_limited += 1
                need_req = (1 - self._bucket_requests) * rl.window / rl.requests
                need_tok = -self._bucket_tokens * rl.window / rl.tokens
                return max(need_req, need_tok, 0.001)
            self._bucket_requests -= 1
            self._bucket_tokens -= input_tokens
            return None

    def _bill_extra_output(self, n: int) -> None:
        with self._lock:
            self.totals.output_tokens += n

    def _add_window_tokens(self, n: int) -> None:
        if self.ratelimit is not None:
            with self._lock:
                self._refill()
                self._bucket_tokens -= n

    def _ratelimit_headers(self) -> dict[str, str]:
        if self.ratelimit is None:
            return {}
        with self._lock:
            self._refill()
            rl = self.ratelimit
            left_req = max(0, math.floor(self._bucket_requests))
            left_tok = max(0, math.floor(self._bucket_tokens))
            full_in = max(
                (rl.requests - self._bucket_requests) * rl.window / rl.requests,
                (rl.tokens - self._bucket_tokens) * rl.window / rl.tokens,
            )
        reset = datetime.fromtimestamp(time.time() + full_in, UTC)
        stamp = reset.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        headers = {
            "anthropic-ratelimit-requests-limit": str(rl.requests),
            "anthropic-ratelimit-requests-remaining": str(left_req),
            "anthropic-ratelimit-requests-reset": stamp,
            "anthropic-ratelimit-tokens-limit": str(rl.tokens),
            "anthropic-ratelimit-tokens-remaining": str(left_tok),
            "anthropic-ratelimit-tokens-reset": stamp,
            "anthropic-ratelimit-input-tokens-limit": str(rl.tokens),
            "anthropic-ratelimit-input-tokens-remaining": str(left_tok),
            "anthropic-ratelimit-input-tokens-reset": stamp,
        }
        return headers


@dataclass
class _Plan:
    """What a message reply will contain after max_tokens truncation."""

    blocks: list[Block]
    text_pieces: list[list[str]]
    """Per block: the text tokens (empty list for a tool_use block)."""
    output_tokens: int
    stop_reason: str
    usage_start: dict[str, int]


def _plan(reply: Reply, body: Mapping[str, Any]) -> _Plan:
    max_tokens = int(body.get("max_tokens") or 0)
    budget = max_tokens
    blocks: list[Block] = []
    pieces: list[list[str]] = []
    truncated = False
    has_tool = False
    for block in reply.blocks:
        if isinstance(block, TextBlock | ThinkingBlock):
            words = text_pieces(block.text if isinstance(block, TextBlock) else block.thinking)
            if len(words) > budget:
                words, truncated = words[:budget], True
            budget -= len(words)
            if isinstance(block, TextBlock):
                blocks.append(TextBlock("".join(words)))
            else:
                blocks.append(ThinkingBlock("".join(words), block.signature))
            pieces.append(words)
        else:
            cost = tokens_for_json(block.input)
            if cost > budget:
                truncated = True
            else:
                budget -= cost
                blocks.append(block)
                pieces.append([])
                has_tool = True
        if truncated:
            break
    output = max_tokens - budget
    stop = "max_tokens" if truncated else ("tool_use" if has_tool else reply.stop_reason)
    total_in = input_tokens_for(body)
    creation = min(reply.cache_creation, total_in)
    read = min(reply.cache_read, total_in - creation)
    usage_start = {
        "input_tokens": total_in - creation - read,
        "cache_creation_input_tokens": creation,
        "cache_read_input_tokens": read,
        "output_tokens": min(1, output),
    }
    return _Plan(blocks, pieces, output, stop, usage_start)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # many concurrent clients connect at once
    fake: FakeAnthropic

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_all(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or hang up are part of the script: stay quiet.
        return None


class _Cut(Exception):
    """Raised inside the handler to drop the connection mid-stream."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    @property
    def fake(self) -> FakeAnthropic:
        return self.server.fake

    # -- plumbing ------------------------------------------------------------------
    def _read_body(self) -> dict[str, Any]:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            parsed = json.loads(raw)
        except ValueError:
            return {"_raw": raw.decode("utf-8", "replace")}
        return parsed if isinstance(parsed, dict) else {"_json": parsed}

    def _record(self, body: dict[str, Any], reply: str) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.fake._record(RecordedRequest(self.command, self.path, headers, body, reply))

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] = {}) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_error(self, status: int, message: str, headers: Mapping[str, str] = {}) -> None:
        kind = _ERROR_TYPES.get(status, "api_error")
        payload = {"type": "error", "error": {"type": kind, "message": message}}
        self._send_json(status, payload, headers)

    # -- routes --------------------------------------------------------------------
    def do_GET(self) -> None:
        self._read_body()
        self._record({}, "error 404")
        self._send_error(404, f"no route {self.path}")

    def do_HEAD(self) -> None:
        self._record({}, "head")
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        body = self._read_body()
        route = self.path.split("?", 1)[0]
        try:
            if route == "/v1/messages":
                self._messages(body)
            elif route == "/v1/messages/count_tokens":
                if not self.fake.count_tokens_enabled:
                    self._record(body, "error 404")
                    self._send_error(404, "count_tokens disabled")
                    return
                self._record(body, "count_tokens")
                self._send_json(200, {"input_tokens": input_tokens_for(body)})
            else:
                self._record(body, "error 404")
                self._send_error(404, f"no route {self.path}")
        except (_Cut, BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _messages(self, body: dict[str, Any]) -> None:
        fake = self.fake
        reply = fake._next_reply(body)
        if reply.kind == "error":
            self._record(body, f"error {reply.status}")
            self._send_error(reply.status, reply.error_message, reply.headers)
            return
        if reply.kind == "hang" and not reply.hang_after_start:
            self._record(body, "hang")
            fake._stop.wait(reply.hang_seconds)
            self.close_connection = True
            return
        wait = fake._admit(input_tokens_for(body))
        if wait is not None:
            self._record(body, "error 429 (limit)")
            headers = {"retry-after": f"{wait:.3f}", **fake._ratelimit_headers()}
            self._send_error(429, "rate limit exceeded", headers)
            return
        plan = _plan(reply, body)
        if reply.kind in ("hang", "drip"):
            plan.blocks, plan.text_pieces, plan.output_tokens = [], [], 0
        kind = reply.kind if reply.kind in ("hang", "drip") else self._describe(reply, plan)
        self._record(body, kind)
        if body.get("stream"):
            self._stream(reply, plan, body)
        else:
            self._whole(plan, body)

    @staticmethod
    def _describe(reply: Reply, plan: _Plan) -> str:
        if reply.error_event is not None:
            return f"stream error {reply.error_event}"
        if reply.cut_after is not None:
            return "cut"
        if any(isinstance(b, ToolUseBlock) for b in plan.blocks):
            return "tool_use"
        return "text"

    def _message_id(self) -> str:
        return f"msg_{uuid.uuid4().hex[:24]}"

    def _model(self, body: Mapping[str, Any]) -> str:
        return self.fake.model or str(body.get("model") or "claude-fake")

    def _whole(self, plan: _Plan, body: Mapping[str, Any]) -> None:
        content: list[dict[str, Any]] = []
        for block in plan.blocks:
            if isinstance(block, TextBlock):
                content.append({"type": "text", "text": block.text})
            elif isinstance(block, ThinkingBlock):
                content.append(
                    {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
                )
            else:
                content.append(
                    {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
                )
        usage = {**plan.usage_start, "output_tokens": plan.output_tokens}
        self.fake._bill(usage)
        self.fake._add_window_tokens(plan.output_tokens)
        message = {
            "id": self._message_id(),
            "type": "message",
            "role": "assistant",
            "model": self._model(body),
            "content": content,
            "stop_reason": plan.stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        self._send_json(200, message, self.fake._ratelimit_headers())

    # -- SSE -------------------------------------------------------------------------
    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, name: str, payload: Mapping[str, Any], delay: float = 0.0) -> None:
        if delay:
            self.fake._stop.wait(delay)
        self._chunk(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())

    def _stream(self, reply: Reply, plan: _Plan, body: Mapping[str, Any]) -> None:
        try:
            self._stream_events(reply, plan, body)
        except _Cut:
            if reply.error_event is None:
                raise
            error = {"type": reply.error_event, "message": f"fake {reply.error_event}"}
            self._event("error", {"type": "error", "error": error})
            self._chunk(b"")

    def _stream_events(self, reply: Reply, plan: _Plan, body: Mapping[str, Any]) -> None:
        fake = self.fake
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        for k, v in fake._ratelimit_headers().items():
            self.send_header(k, v)
        self.end_headers()
        d = reply.delay
        start = {
            "type": "message_start",
            "message": {
                "id": self._message_id(),
                "type": "message",
                "role": "assistant",
                "model": self._model(body),
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": plan.usage_start,
            },
        }
        self._event("message_start", start)
        fake._bill(plan.usage_start)  # what the client has been told so far
        self._event("ping", {"type": "ping"}, d)
        if reply.kind == "hang":
            fake._stop.wait(reply.hang_seconds)
            raise _Cut
        if reply.kind == "drip":
            while not fake._stop.wait(reply.drip_every):
                self._event("ping", {"type": "ping"})  # BrokenPipeError once the client left
            raise _Cut
        deltas = 0
        for index, block in enumerate(plan.blocks):
            if isinstance(block, TextBlock):
                start_block: dict[str, Any] = {"type": "text", "text": ""}
            elif isinstance(block, ThinkingBlock):
                start_block = {"type": "thinking", "thinking": "", "signature": ""}
            else:
                start_block = {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}
            self._event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start_block},
                d,
            )
            if isinstance(block, TextBlock | ThinkingBlock):
                words = plan.text_pieces[index]
                step = max(1, reply.chunk_words)
                for i in range(0, len(words), step):
                    if reply.cut_after is not None and deltas >= reply.cut_after:
                        raise _Cut
                    piece = "".join(words[i : i + step])
                    if isinstance(block, TextBlock):
                        delta = {"type": "text_delta", "text": piece}
                    else:
                        delta = {"type": "thinking_delta", "thinking": piece}
                    self._event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                        d,
                    )
                    deltas += 1
                if isinstance(block, ThinkingBlock):
                    delta = {"type": "signature_delta", "signature": block.signature}
                    self._event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                        d,
                    )
            else:
                raw = json.dumps(block.input)
                for i in range(0, len(raw), 16):
                    if reply.cut_after is not None and deltas >= reply.cut_after:
                        raise _Cut
                    delta = {"type": "input_json_delta", "partial_json": raw[i : i + 16]}
                    self._event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                        d,
                    )
                    deltas += 1
            self._event("content_block_stop", {"type": "content_block_stop", "index": index}, d)
        if reply.cut_after is not None:
            raise _Cut
        final = {**plan.usage_start, "output_tokens": plan.output_tokens}
        self._event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": plan.stop_reason, "stop_sequence": None},
                "usage": final,
            },
            d,
        )
        # message_start already billed its output token; bill the rest of the output.
        fake._bill_extra_output(plan.output_tokens - plan.usage_start["output_tokens"])
        fake._add_window_tokens(plan.output_tokens)
        self._event("message_stop", {"type": "message_stop"}, d)
        self._chunk(b"")  # the terminating zero-length chunk

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()


try:
    import pytest

    @pytest.fixture
    def fake_anthropic() -> Iterator[FakeAnthropic]:
        """A started FakeAnthropic (empty script, default text replies)."""
        with FakeAnthropic() as server:
            yield server

except ImportError:  # pragma: no cover - usable without pytest too
    pass
