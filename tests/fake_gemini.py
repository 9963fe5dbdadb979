"""A fake Gemini API (generativelanguage v1beta) on 127.0.0.1 for tests (stdlib only,
real HTTP + SSE).

The real Gemini CLI (`gemini -p ... --output-format stream-json`, 0.61.0) talks to it
with `GOOGLE_GEMINI_BASE_URL=server.base_url`, `GEMINI_API_KEY` and, in its HOME,
`gemini_settings()` as `.gemini/settings.json` (the base URL alone selects a "gateway"
auth type that headless mode rejects):

    with FakeGemini([function_call("run_shell_command", {"command": "ls"}), text("ok")]) as s:
        env = {"GEMINI_API_KEY": "k", "GOOGLE_GEMINI_BASE_URL": s.base_url, "HOME": ...}
        ...
        assert s.totals.prompt == ...

Behaviour:
- POST `/v1beta/models/MODEL:streamGenerateContent?alt=sse` pops the next scripted
  reply whose `when` matches the parsed body (default: any), else `server.default`,
  and answers with SSE `data:` chunks: the text word by word, a function call, and
  `usageMetadata` on every chunk (the final one is what counts, as with the real API).
  POST `...:generateContent` (the CLI's router classifier when the model is "auto",
  its summaries) gets a small JSON answer, billed too; `...:countTokens` is answered
  and not billed.
- Usage is deterministic: `promptTokenCount` is the JSON of the request's contents,
  system instruction and tools, 4 characters a token, plus 1; `cachedContentTokenCount`
  a reply's `cached` (capped; a part of the prompt); `candidatesTokenCount` one per
  word of text plus `len(json(args)) // 4 + 1` for a call; `thoughtsTokenCount` a
  reply's `thoughts`; `totalTokenCount` their sum (prompt + candidates + thoughts).
- `totals` is the server's own bill, per model in `by_model`.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "FakeGemini",
    "Reply",
    "function_call",
    "function_responses",
    "gemini_settings",
    "hang",
    "text",
]

_WORD = re.compile(r"\S+\s*")
Predicate = Callable[[Mapping[str, Any]], bool]


def gemini_settings() -> dict[str, Any]:
    """The CLI's user settings for an offline run: API-key auth (with a base URL of
    one's own) and no usage statistics (they would be sent to Google)."""
    return {
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": False},
    }


@dataclass(frozen=True)
class Reply:
    text: str = ""
    call: tuple[str, dict[str, Any]] | None = None
    cached: int = 0
    thoughts: int = 0
    hang_seconds: float = 0.0
    when: Predicate | None = None


def text(
    s: str = "Hello from the fake.",
    *,
    cached: int = 0,
    thoughts: int = 0,
    when: Predicate | None = None,
) -> Reply:
    return Reply(text=s, cached=cached, thoughts=thoughts, when=when)


def function_call(
    name: str, args: Mapping[str, Any], *, preface: str = "", when: Predicate | None = None
) -> Reply:
    return Reply(text=preface, call=(name, dict(args)), when=when)


def hang(seconds: float, *, when: Predicate | None = None) -> Reply:
    """Send nothing (nothing billed) for `seconds` or until the server stops, then close."""
    return Reply(hang_seconds=seconds, when=when)


def function_responses(body: Mapping[str, Any]) -> int:
    """How many tool results the request carries (its turn's model calls so far)."""
    n = 0
    for content in body.get("contents") or []:
        for part in content.get("parts") or [] if isinstance(content, Mapping) else []:
            if isinstance(part, Mapping) and "functionResponse" in part:
                n += 1
    return n


@dataclass
class Totals:
    prompt: int = 0
    cached: int = 0
    candidates: int = 0
    thoughts: int = 0
    responses: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt + self.candidates + self.thoughts


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    model: str = ""
    reply: str = ""
    usage: dict[str, int] = field(default_factory=dict)


class FakeGemini:
    def __init__(self, replies: Sequence[Reply] = (), *, default: Reply | None = None) -> None:
        self._replies = list(replies)
        self.default = default or text()
        self.requests: list[RecordedRequest] = []
        self.totals = Totals()
        self.by_model: dict[str, Totals] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._stop = threading.Event()

    def start(self) -> FakeGemini:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._record("GET", self, None)
                self._json(404, {"error": {"code": 404, "message": "not found"}})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                rec = fake._record("POST", self, body)
                m = re.search(r"/models/([^/:]+):(\w+)", self.path)
                if m is None or not isinstance(body, dict):
                    self._json(404, {"error": {"code": 404, "message": "not found"}})
                    return
                rec.model, method = m.group(1), m.group(2)
                if method == "countTokens":
                    self._json(200, {"totalTokens": prompt_tokens(body)})
                elif method == "streamGenerateContent":
                    fake._stream(self, rec)
                else:
                    fake._generate(self, rec)

            def _json(self, status: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeGemini:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def pending(self) -> int:
        return len(self._replies)

    def model_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.reply]

    def _record(self, method: str, h: BaseHTTPRequestHandler, body: Any) -> RecordedRequest:
        rec = RecordedRequest(method, h.path, {k.lower(): v for k, v in h.headers.items()}, body)
        with self._lock:
            self.requests.append(rec)
        return rec

    def _pick(self, body: Mapping[str, Any]) -> Reply:
        with self._lock:
            for i, reply in enumerate(self._replies):
                if reply.when is None or reply.when(body):
                    return self._replies.pop(i)
        return self.default

    def _bill(self, rec: RecordedRequest, reply: Reply, candidates: int) -> dict[str, int]:
        prompt = prompt_tokens(rec.body)
        cached = min(reply.cached, prompt)
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": candidates,
            "totalTokenCount": prompt + candidates + reply.thoughts,
        }
        if cached:
            usage["cachedContentTokenCount"] = cached
        if reply.thoughts:
            usage["thoughtsTokenCount"] = reply.thoughts
        with self._lock:
            rec.usage = usage
            for t in (self.totals, self.by_model.setdefault(rec.model, Totals())):
                t.prompt += prompt
                t.cached += cached
                t.candidates += candidates
                t.thoughts += reply.thoughts
                t.responses += 1
        return usage

    def _generate(self, h: BaseHTTPRequestHandler, rec: RecordedRequest) -> None:
        """A non-streaming call (the router's classifier): a small JSON text."""
        answer = json.dumps(
            {
                "reasoning": "simple",
                "model_choice": "flash",
                "complexity_reasoning": "simple",
                "complexity_score": 10,
            }
        )
        rec.reply = "generate"
        usage = self._bill(rec, Reply(), tokens_for_text(answer))
        data = json.dumps(
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": answer}]},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": usage,
                "modelVersion": rec.model,
            }
        ).encode()
        h.send_response(200)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _stream(self, h: BaseHTTPRequestHandler, rec: RecordedRequest) -> None:
        reply = self._pick(rec.body)
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.send_header("transfer-encoding", "chunked")
        h.end_headers()

        def send(obj: dict[str, Any]) -> None:
            data = f"data: {json.dumps(obj)}\r\n\r\n".encode()
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            h.wfile.flush()

        if reply.hang_seconds:
            rec.reply = "hang"
            h.wfile.flush()
            self._stop.wait(reply.hang_seconds)
            return
        pieces: list[dict[str, Any]] = [{"text": w} for w in _WORD.findall(reply.text)]
        candidates = tokens_for_text(reply.text)
        if reply.call is not None:
            name, args = reply.call
            pieces.append({"functionCall": {"name": name, "args": args}})
            candidates += len(json.dumps(args)) // 4 + 1
        rec.reply = "call" if reply.call else "text"
        usage = self._bill(rec, reply, candidates)
        for i, part in enumerate(pieces or [{"text": ""}]):
            last = i == max(len(pieces), 1) - 1
            chunk: dict[str, Any] = {
                "candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}],
                "usageMetadata": usage if last else {"promptTokenCount": usage["promptTokenCount"]},
                "modelVersion": rec.model,
            }
            if last:
                chunk["candidates"][0]["finishReason"] = "STOP"
            send(chunk)
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()


def prompt_tokens(body: Mapping[str, Any]) -> int:
    payload = {k: body.get(k) for k in ("contents", "systemInstruction", "tools")}
    return len(json.dumps(payload, sort_keys=True, ensure_ascii=False)) // 4 + 1


def tokens_for_text(s: str) -> int:
    return len(_WORD.findall(s))
