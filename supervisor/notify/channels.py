"""Where a notification goes: the desktop (notify-send), a webhook, a command.

Each channel's `send` makes one attempt within its timeout and raises
`DeliveryFailed` with a reason that never holds the webhook URL (an HTTP library's
messages quote it: only the exception's type and the status code are kept). The
command and notify-send run like every child: their own process group, killed
when the attempt ends or the run is cancelled, the allow-listed environment.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Protocol
from urllib.parse import urlsplit

import anyio

from supervisor.notify.message import Message
from supervisor.process import run_captured
from supervisor.spec import NotifySpec

NOTIFY_SEND = "notify-send"
USER_AGENT = "loopvisor-notify"


class DeliveryFailed(Exception):
    """One attempt failed; the message says why (never the webhook URL)."""


class Channel(Protocol):
    @property
    def name(self) -> str:
        """How reports and notices call it (`webhook (slack) to hooks.slack.com`)."""
        ...

    async def send(self, message: Message) -> str:
        """Deliver once; what happened (`HTTP 200`); `DeliveryFailed` otherwise."""
        ...


@dataclass(frozen=True, slots=True)
class Children:
    """Where channel processes run and what they carry (`reaper` finds them by it)."""

    cwd: Path
    env: Mapping[str, str]


@dataclass(slots=True)
class WebhookChannel:
    url: str
    format: str
    timeout: float

    @property
    def name(self) -> str:
        host = urlsplit(self.url).hostname or "?"
        return f"webhook ({self.format}) to {host}"

    async def send(self, message: Message) -> str:
        http = _http()
        headers = {"User-Agent": USER_AGENT}
        try:
            async with http.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
                with anyio.fail_after(self.timeout):  # the whole exchange, not each read
                    if self.format == "ntfy":
                        body, extra = message.ntfy()
                        response = await client.post(
                            self.url, content=body, headers={**headers, **extra}
                        )
                    else:
                        doc = message.slack() if self.format == "slack" else message.document()
                        response = await client.post(self.url, json=doc, headers=headers)
        except TimeoutError:
            raise DeliveryFailed(f"no answer within {self.timeout:g}s") from None
        except http.HTTPError as exc:  # its text names the URL: the type only
            raise DeliveryFailed(type(exc).__name__) from None
        except OSError as exc:
            raise DeliveryFailed(exc.strerror or type(exc).__name__) from None
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"HTTP {response.status_code}")
        return f"HTTP {response.status_code}"


@dataclass(slots=True)
class CommandChannel:
    argv: tuple[str, ...]
    timeout: float
    children: Children

    @property
    def name(self) -> str:
        return f"command {Path(self.argv[0]).name}"

    async def send(self, message: Message) -> str:
        stdin = json.dumps(message.document()).encode("utf-8")
        return await _run(self.argv, stdin, self.timeout, self.children)


@dataclass(slots=True)
class DesktopChannel:
    program: str
    timeout: float
    children: Children

    name = "desktop (notify-send)"

    async def send(self, message: Message) -> str:
        urgency = "critical" if message.kind in ("attention", "failed") else "normal"
        argv = (self.program, "-a", "loopvisor", "-u", urgency, message.title, message.text)
        return await _run(argv, None, self.timeout, self.children)


async def _run(argv: tuple[str, ...], stdin: bytes | None, timeout: float, at: Children) -> str:
    try:
        ran = await run_captured(
            argv, cwd=at.cwd, env=at.env, timeout=timeout, stdin=stdin, max_output=2048
        )
    except OSError as exc:
        raise DeliveryFailed(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    if ran.timed_out:
        raise DeliveryFailed(f"killed after {timeout:g}s")
    if ran.exit_code != 0:
        tail = ran.output.strip().splitlines()[-1:] if ran.output.strip() else []
        said = f": {tail[0][:200]}" if tail else ""
        raise DeliveryFailed(f"exit code {ran.exit_code}{said}")
    return "exit code 0"


def _http() -> ModuleType:
    """The SDK's HTTP stack, imported when a webhook is first called (not at start-up):
    httpx2 (anthropic >= 2) or httpx (older)."""
    try:
        import httpx2

        return httpx2
    except ImportError:  # pragma: no cover
        import httpx  # type: ignore[import-not-found, unused-ignore]

        return httpx  # type: ignore[no-any-return, unused-ignore]


def notify_send() -> str | None:
    """notify-send's path, or None where the desktop has none."""
    return shutil.which(NOTIFY_SEND)


def channels_of(spec: NotifySpec, children: Children) -> list[Channel]:
    """The delivering channels of one `[notify]` (desktop only where notify-send is)."""
    found: list[Channel] = []
    program = notify_send() if spec.desktop else None
    if program is not None:
        found.append(DesktopChannel(program, spec.timeout, children))
    if spec.webhook:
        found.append(WebhookChannel(spec.webhook, spec.format, spec.timeout))
    if spec.command:
        found.append(CommandChannel(spec.command, spec.timeout, children))
    return found
