"""A fake OpenAI Responses API on 127.0.0.1 for tests (stdlib only, real HTTP + SSE).

The real Codex CLI (`codex exec --json`) talks to it as to api.openai.com when it is
given a model provider whose `base_url` is `server.base_url` (see `codex_args`):

    with FakeOpenAI([function_call("exec_command", {"cmd": "echo hi"}), text("done")]) as s:
        argv += codex_args(s)            # -c model_provider=... (no WebSocket, env key)
        env = {"OPENAI_API_KEY": "sk-test", ...}
        ...
        assert s.totals.input_tokens == ...

Behaviour:
- Every POST /v1/responses pops the next scripted reply whose `when` matches the
  parsed body (default: any), else `server.default` (a short text). It answers with
  real SSE: response.created, output_item.added / deltas / output_item.done per item,
  response.completed with `usage`. A GET (Codex's Responses-over-WebSocket probe) is
  answered 404.
- Usage is deterministic: input tokens are `input_tokens_for(body)` (JSON of the
  request's input and tools, 4 characters a token, plus 1), of which `cached` (a
  reply's argument, capped) are reported as `input_tokens_details.cached_tokens`
  (a part of `input_tokens`, as the real API counts them); output tokens are one per
  whitespace-separated word of text plus `tokens_for_json` of a call's arguments plus
  the reply's `reasoning` tokens (also a part of `output_tokens`).
- `totals` is the server's own bill: what it reported in each completed response.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "FakeOpenAI",
    "Reply",
    "after_tool_output",
    "codex_args",
    "custom_call",
    "function_call",
    "hang",
    "input_tokens_for",
    "text",
]

_WORD = re.compile(r"\S+\s*")
Predicate = Callable[[Mapping[str, Any]], bool]


def input_tokens_for(body: Mapping[str, Any]) -> int:
    payload = {k: body.get(k) for k in ("instructions", "input", "tools")}
    return len(json.dumps(payload, sort_keys=True, ensure_ascii=False)) // 4 + 1


def tokens_for_text(s: str) -> int:
    return len(_WORD.findall(s))


def tokens_for_json(value: Any) -> int:
    return len(json.dumps(value)) // 4 + 1


@dataclass(frozen=True)
class Reply:
    """One scripted response; build it with `text`, `function_call`, `custom_call`, `hang`."""

    text: str = ""
    call: tuple[str, str, str] | None = None
    """(type, name, arguments or input): a function_call or custom_tool_call item."""
    cached: int = 0
    reasoning: int = 0
    hang_seconds: float = 0.0
    """Hang after response.created (nothing billed) for this long, then close."""
    when: Predicate | None = None


def text(
    s: str = "Hello from the fake.",
    *,
    cached: int = 0,
    reasoning: int = 0,
    when: Predicate | None = None,
) -> Reply:
    return Reply(text=s, cached=cached, reasoning=reasoning, when=when)


def function_call(
    name: str,
    arguments: Mapping[str, Any],
    *,
    preface: str = "",
    cached: int = 0,
    when: Predicate | None = None,
) -> Reply:
    return Reply(
        text=preface, call=("function_call", name, json.dumps(arguments)), cached=cached, when=when
    )


def custom_call(name: str, input: str, *, when: Predicate | None = None) -> Reply:
    return Reply(call=("custom_tool_call", name, input), when=when)


def hang(seconds: float, *, when: Predicate | None = None) -> Reply:
    return Reply(hang_seconds=seconds, when=when)


def after_tool_output(body: Mapping[str, Any]) -> bool:
    """The request carries a tool's output (the turn's second model call)."""
    items = body.get("input")
    kinds = {"function_call_output", "custom_tool_call_output"}
    return isinstance(items, list) and any(
        isinstance(i, Mapping) and i.get("type") in kinds for i in items
    )


@dataclass
class Totals:
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    responses: int = 0

    @property
    def tokens(self) -> int:
        """What the ledger charges: input (cached included) plus output."""
        return self.input_tokens + self.output_tokens


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    reply: str = ""
    usage: dict[str, Any] = field(default_factory=dict)


class FakeOpenAI:
    def __init__(self, replies: Sequence[Reply] = (), *, default: Reply | None = None) -> None:
        self._replies = list(replies)
        self.default = default or text()
        self.requests: list[RecordedRequest] = []
        self.totals = Totals()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._record("GET", self, None)
                self._plain(404, b'{"error":{"message":"not found"}}')

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                rec = fake._record("POST", self, body)
                if not self.path.split("?")[0].endswith("/responses") or body is None:
                    self._plain(404, b'{"error":{"message":"not found"}}')
                    return
                fake._answer(self, rec)

            def _plain(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pending(self) -> int:
        return len(self._replies)

    def response_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST"]

    # -- serving --------------------------------------------------------------------
    def _record(self, method: str, handler: BaseHTTPRequestHandler, body: Any) -> RecordedRequest:
        rec = RecordedRequest(
            method, handler.path, {k.lower(): v for k, v in handler.headers.items()}, body
        )
        with self._lock:
            self.requests.append(rec)
        return rec

    def _pick(self, body: Mapping[str, Any]) -> Reply:
        with self._lock:
            for i, reply in enumerate(self._replies):
                if reply.when is None or reply.when(body):
                    return self._replies.pop(i)
        return self.default

    def _answer(self, h: BaseHTTPRequestHandler, rec: RecordedRequest) -> None:
        reply = self._pick(rec.body)
        rid = f"resp_{uuid.uuid4().hex[:12]}"
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.send_header("transfer-encoding", "chunked")
        h.end_headers()

        def send(event: dict[str, Any]) -> None:
            data = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            h.wfile.flush()

        send(
            {
                "type": "response.created",
                "response": {
                    "id": rid,
                    "object": "response",
                    "status": "in_progress",
                    "output": [],
                },
            }
        )
        if reply.hang_seconds:
            rec.reply = "hang"
            self._stop.wait(reply.hang_seconds)
            return
        output: list[dict[str, Any]] = []
        out_tokens = reply.reasoning
        if reply.text:
            mid = f"msg_{uuid.uuid4().hex[:12]}"
            index = len(output)
            send(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {
                        "type": "message",
                        "id": mid,
                        "role": "assistant",
                        "status": "in_progress",
                        "content": [],
                    },
                }
            )
            for piece in _WORD.findall(reply.text) or [reply.text]:
                send(
                    {
                        "type": "response.output_text.delta",
                        "item_id": mid,
                        "output_index": index,
                        "content_index": 0,
                        "delta": piece,
                    }
                )
            item = {
                "type": "message",
                "id": mid,
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
            }
            send({"type": "response.output_item.done", "output_index": index, "item": item})
            output.append(item)
            out_tokens += tokens_for_text(reply.text)
        if reply.call is not None:
            kind, name, args = reply.call
            index = len(output)
            call_id = f"call_{uuid.uuid4().hex[:12]}"
            if kind == "function_call":
                item = {
                    "type": kind,
                    "id": f"fc_{call_id}",
                    "call_id": call_id,
                    "name": name,
                    "arguments": args,
                    "status": "completed",
                }
            else:
                item = {
                    "type": kind,
                    "id": f"ctc_{call_id}",
                    "call_id": call_id,
                    "name": name,
                    "input": args,
                    "status": "completed",
                }
            send(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**item, "status": "in_progress"},
                }
            )
            send({"type": "response.output_item.done", "output_index": index, "item": item})
            output.append(item)
            out_tokens += tokens_for_json(args)
        inp = input_tokens_for(rec.body)
        cached = min(reply.cached, inp)
        usage = {
            "input_tokens": inp,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": out_tokens,
            "output_tokens_details": {"reasoning_tokens": reply.reasoning},
            "total_tokens": inp + out_tokens,
        }
        send(
            {
                "type": "response.completed",
                "response": {
                    "id": rid,
                    "object": "response",
                    "status": "completed",
                    "output": output,
                    "usage": usage,
                },
            }
        )
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()
        with self._lock:
            rec.reply = "call" if reply.call else "text"
            rec.usage = usage
            t = self.totals
            t.input_tokens += inp
            t.cached_input_tokens += cached
            t.output_tokens += out_tokens
            t.reasoning_tokens += reply.reasoning
            t.responses += 1


def codex_args(server: FakeOpenAI, env_key: str = "OPENAI_API_KEY") -> list[str]:
    """`-c` overrides pointing `codex exec` at `server`: a model provider of its own over
    HTTP (the built-in `openai` provider first tries Responses over a WebSocket, five
    times, before it falls back), its key read from `env_key`."""
    return [
        "-c",
        "model_provider=fake",
        "-c",
        "model_providers.fake.name=fake",
        "-c",
        f'model_providers.fake.base_url="{server.base_url}"',
        "-c",
        f"model_providers.fake.env_key={env_key}",
        "-c",
        "model_providers.fake.wire_api=responses",
    ]


def iter_items(body: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    items = body.get("input")
    for item in items if isinstance(items, list) else []:
        if isinstance(item, Mapping):
            yield item
