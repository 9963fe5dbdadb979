"""A webhook receiver on 127.0.0.1 for the notification tests: records every request,
answers 200, 500, or hangs until released (a webhook that never answers)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

SECRET_PATH = "/hooks/T0/s3cret-webhook-token-9f8e7d"
"""The part of the URL a leak test looks for."""


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Hook:
    def __init__(self, mode: Literal["ok", "fail", "hang"] = "ok") -> None:
        self.mode = mode
        self.requests: list[Received] = []
        self._cond = threading.Condition()
        self.released = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(size)
                with hook._cond:
                    hook.requests.append(Received(self.path, dict(self.headers), body))
                    hook._cond.notify_all()
                if hook.mode == "hang":
                    hook.released.wait(60)
                self.send_response(500 if hook.mode == "fail" else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}"

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """The first `count` requests, once they came (AssertionError after `timeout`)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.requests) >= count, timeout)
            assert ok, f"{len(self.requests)} request(s) came, expected {count}"
            return list(self.requests)

    def documents(self) -> list[Any]:
        with self._cond:
            return [r.json() for r in self.requests]


@contextmanager
def webhook(mode: Literal["ok", "fail", "hang"] = "ok") -> Iterator[Hook]:
    hook = Hook(mode)
    thread = threading.Thread(target=hook.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        hook.released.set()
        hook.server.shutdown()
        hook.server.server_close()
        thread.join(5)
