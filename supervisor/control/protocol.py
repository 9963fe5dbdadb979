"""The control-socket wire format: versioned JSON lines (see docs/protocol.md).

One JSON object per line, UTF-8, `\\n`-terminated, in both directions:

- server → client, once on connect: `{"v": 1, "hello": "loopvisor", ...run info}`
- client → server: `{"id": 7, "op": "pause", "args": {"loop": "fix-auth"}}`
  (`v` optional; when present it must be 1)
- server → client: `{"id": 7, "ok": true, "result": ...}` or
  `{"id": 7, "ok": false, "error": "...", "kind": "control"}`
- server → subscribed client: `{"event": {...Event.to_dict()}}`

This module frames and validates (each op's args by its definition in `control.ops`)
and holds the small socket helpers both ends share; it never touches a supervisor,
so the server, the client and the tests share one definition of "well-formed".
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

import anyio
from anyio.abc import ByteReceiveStream, SocketStream

from supervisor.api import ControlError
from supervisor.control import ops
from supervisor.textsafe import json_loads, utf8

VERSION: Final = 1
MAX_REQUEST_LINE: Final = 1 << 20
"""A request line longer than this (1 MiB) is refused and skipped."""
MAX_SERVER_LINE: Final = 64 << 20
"""What a client accepts from the server (snapshots of many loops can be large)."""
SOCKET_NAME: Final = "control.sock"

ErrorKind: TypeAlias = Literal["protocol", "control", "config", "internal", "permission", "busy"]
RequestId: TypeAlias = int | str
OPS: Final = ops.NAMES
"""Every op, as the hello lists them (`control.ops` defines them)."""


def socket_path(state_dir: Path) -> Path:
    return Path(state_dir) / SOCKET_NAME


class RemoteError(ControlError):
    """A refused operation; `kind` is the wire error kind (control, config, protocol, ...)."""

    def __init__(self, message: str, kind: ErrorKind = "control") -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


class NotServing(ControlError):
    """No loopvisor answers on the socket (missing, stale, refused or not loopvisor)."""


class ServerRefused(NotServing):
    """A loopvisor answered but refused this connection (too many clients, wrong uid).

    A `NotServing` so callers that only care "can I talk to it" keep working; its
    message says what really happened instead of "no loopvisor is serving".
    """


class ServerTimeout(NotServing):
    """Something holds the socket but sent no hello in time (a hung or overloaded server)."""


class ProtocolError(Exception):
    """A request line that cannot be served; `request_id` is echoed when it was readable."""

    def __init__(self, message: str, request_id: RequestId | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Request:
    id: RequestId
    op: str
    args: Mapping[str, Any]


def parse_request(line: bytes) -> Request:
    """Decode and validate one request line; raises ProtocolError saying what is wrong.

    Strings come out valid (a lone surrogate escape becomes U+FFFD): a request's text
    ends up in the journal, in events and in replies, which all need valid UTF-8.
    """
    try:
        data = json_loads(line)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"not a JSON object: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"expected a JSON object, got {type(data).__name__}")
    rid = data.get("id")
    if not (isinstance(rid, int | str) and not isinstance(rid, bool) and len(str(rid)) <= 100):
        raise ProtocolError('"id" must be an integer or a short string')
    if "v" in data and data["v"] != VERSION:
        raise ProtocolError(f"unsupported protocol version {data['v']!r}; this is v{VERSION}", rid)
    extra = set(data) - {"v", "id", "op", "args"}
    if extra:
        raise ProtocolError(f"unknown field(s): {', '.join(sorted(extra))}", rid)
    op = data.get("op")
    if not isinstance(op, str) or op not in ops.BY_NAME:
        raise ProtocolError(f"unknown op {op!r}; ops: {', '.join(OPS)}", rid)
    args = data.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ProtocolError('"args" must be an object', rid)
    problem = ops.BY_NAME[op].problem(args)
    if problem is not None:
        raise ProtocolError(problem, rid)
    return Request(rid, op, args)


# -- encoding -------------------------------------------------------------------
def encode(message: Mapping[str, Any]) -> bytes:
    """One message as a line (compact JSON; odd values become strings, never an error;
    a lone surrogate in a string is sent as U+FFFD)."""
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), default=str)
    return utf8(text) + b"\n"


def ok(request_id: RequestId | None, result: Any = None) -> bytes:
    return encode({"id": request_id, "ok": True, "result": result})


def error(request_id: RequestId | None, message: str, kind: ErrorKind = "control") -> bytes:
    return encode({"id": request_id, "ok": False, "error": message, "kind": kind})


def event_line(event: Mapping[str, Any]) -> bytes:
    return encode({"event": event})


# -- reading lines ----------------------------------------------------------------
class Oversized:
    """Returned by `LineReader.next()` for a line over the limit (its rest is skipped)."""

    def __init__(self, size: int) -> None:
        self.size = size


class LineReader:
    """Newline-delimited lines from a byte stream, with a hard per-line bound.

    A line over `max_line` bytes is reported once as `Oversized` as soon as the
    bound is crossed; its remaining bytes are discarded up to the next newline,
    so memory stays bounded whatever the peer sends.
    """

    def __init__(self, stream: ByteReceiveStream, max_line: int) -> None:
        self._stream = stream
        self._max = max_line
        self._buf = bytearray()
        self._skipping = False
        self._eof = False

    async def next(self) -> bytes | Oversized | None:
        """The next line (without `\\n`), `Oversized`, or None at end of stream."""
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                if self._skipping:
                    self._skipping = False
                    continue
                return line
            if self._skipping:
                self._buf.clear()
            elif len(self._buf) > self._max:
                size = len(self._buf)
                self._buf.clear()
                self._skipping = True
                return Oversized(size)
            if self._eof:
                if self._buf and not self._skipping:
                    line = bytes(self._buf)
                    self._buf.clear()
                    return line
                return None
            try:
                chunk = await self._stream.receive(65536)
            except Exception:  # EndOfStream, BrokenResourceError, ClosedResourceError
                chunk = b""
            if not chunk:
                self._eof = True
            self._buf += chunk


# -- socket paths -----------------------------------------------------------------
UNIX_PATH_MAX: Final = 100
"""sun_path holds 108 bytes on Linux; longer paths are reached through /proc/self/fd."""


@contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An address for bind/connect that works for long paths too (Linux /proc trick)."""
    raw = os.fsencode(path)
    if len(raw) < UNIX_PATH_MAX:
        yield str(path)
        return
    if not Path("/proc/self/fd").is_dir():
        raise OSError(f"socket path too long ({len(raw)} bytes): {path}")
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (None if unknown)."""
    if not hasattr(socket, "SO_PEERCRED"):  # pragma: no cover - Linux has it
        return None
    import struct

    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


async def connect(path: Path, timeout: float = 5.0) -> SocketStream:
    """A connected stream to the Unix socket at `path` (OSError if nobody listens).

    Transport-based (`SocketStream.from_socket`), like the server's side: anyio's raw
    `UNIXSocketStream` can hit a cancelled-future race when a blocked `receive()` is
    cancelled just as data arrives.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        with unix_address(path) as addr:
            await anyio.to_thread.run_sync(sock.connect, addr)
        sock.setblocking(False)
        return await SocketStream.from_socket(sock)
    except BaseException:
        sock.close()
        raise
