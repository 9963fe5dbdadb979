"""The notifier: a bus sink that never blocks a loop, and the task that delivers.

`record` (the sink) only turns an event into an alert (`alerts.AlertTracker`) and
appends it to a bounded queue: a full queue drops and counts, it never waits. The
delivery task (`run`) waits for the first alert, gathers what comes within the
`coalesce` window, makes one message per (kind, `[notify]` table) (20 loops
exhausted at once: one message) and sends it through each channel of that table,
every channel on its own, each attempt within its timeout and failed attempts
retried with backoff. A channel that keeps failing is said once (a warning notice
on the bus: the journal, the log and the console show it), and again once it works.

`drain` (at the end of the run) sends what is queued without waiting for a window,
within a deadline: the run's summary goes out before the process exits.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from supervisor import events as ev
from supervisor.alerts import Alert, AlertTracker
from supervisor.notify.channels import Channel, Children, DeliveryFailed, channels_of, notify_send
from supervisor.notify.message import Message, Spend
from supervisor.spec import Config, NotifySpec

QUEUE_MAX = 1000
"""Alerts waiting for delivery; beyond it alerts are counted and dropped."""
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
Notice = Callable[[str, str], None]
"""(message, level): a line on the bus (`Supervisor.notice`)."""


@dataclass(frozen=True, slots=True)
class _Queued:
    spec: NotifySpec
    alert: Alert


class Notifier:
    def __init__(
        self,
        config: Config,
        *,
        run_id: str,
        notice: Notice,
        children: Children,
        host: str | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.config = config
        self.run_id = run_id
        self._notice = notice
        self._children = children
        self.host = host or socket.gethostname()
        self._sleep = sleep
        self._tracker = AlertTracker()
        self._queue: deque[_Queued] = deque()
        self._dropped = 0
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self._closing = False
        self._started = False
        self._spend: dict[str, Spend] = {}
        self._channels: dict[NotifySpec, list[Channel]] = {}
        self._failing: set[str] = set()
        self.sent: deque[tuple[str, Message]] = deque(maxlen=256)
        """(channel name, message) of the latest deliveries that went through."""

    @staticmethod
    def wanted(config: Config) -> bool:
        """Whether any `[notify]` of `config` delivers anywhere (else no notifier)."""
        return any(spec.channels for spec in config.notify_specs())

    # -- the sink ----------------------------------------------------------------
    def record(self, event: ev.Event) -> None:
        """A bus sink: cheap, synchronous, never waits."""
        if isinstance(event, ev.UsageCharged):
            spent = self._spend.get(event.loop, Spend())
            self._spend[event.loop] = Spend(spent.tokens + event.tokens, spent.usd + event.usd)
            return
        if isinstance(event, ev.RunStarted):
            self._started = True
            self._wake.set()  # the task says what it cannot do, now that the run is on
            return
        alert = self._tracker.observe(event)
        if alert is None:
            return
        spec = self.config.notify_for(alert.loop)
        if alert.subscribed_as not in spec.events or not spec.channels:
            return
        if len(self._queue) >= QUEUE_MAX:
            self._dropped += 1
            return
        self._queue.append(_Queued(spec, alert))
        self._idle = anyio.Event()
        self._wake.set()

    # -- the delivery task ---------------------------------------------------------
    async def run(self) -> None:
        """Deliver until cancelled (the caller's task group ends it after `drain`)."""
        announced = False
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            if self._started and not announced:
                announced = True
                self._announce()
            if not self._queue:
                continue
            if not self._closing:
                with anyio.move_on_after(self.config.notify.coalesce):
                    await self._closed()  # gather the burst; `drain` cuts the wait short
            batch = list(self._queue)
            self._queue.clear()
            await self.deliver(_messages(batch, self.run_id, self.host, dict(self._spend)))
            if self._dropped:
                count, self._dropped = self._dropped, 0
                self._notice(f"notifications: {count} alert(s) dropped (queue full)", "warning")
            if not self._queue:
                self._idle.set()

    async def _closed(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake = anyio.Event()

    async def drain(self, timeout: float) -> None:
        """Send what is queued now (no window), waiting at most `timeout` seconds."""
        self._closing = True
        self._wake.set()
        with anyio.move_on_after(timeout):
            await self._idle.wait()

    def drain_timeout(self) -> float:
        """Long enough for one attempt of each table's slowest channel, and a bit."""
        return max(spec.timeout for spec in self.config.notify_specs()) + 2.0

    def _announce(self) -> None:
        if any(spec.desktop for spec in self.config.notify_specs()) and notify_send() is None:
            self._notice("desktop notifications are off: notify-send is not installed", "info")

    async def deliver(self, messages: list[tuple[NotifySpec, Message]]) -> None:
        """Every message through every channel of its table, all at once."""
        async with anyio.create_task_group() as tg:
            for spec, message in messages:
                for channel in self._channels_of(spec):
                    tg.start_soon(self._attempts, spec, channel, message)

    def _channels_of(self, spec: NotifySpec) -> list[Channel]:
        if spec not in self._channels:
            self._channels[spec] = channels_of(spec, self._children)
        return self._channels[spec]

    async def _attempts(self, spec: NotifySpec, channel: Channel, message: Message) -> None:
        why = ""
        for attempt in range(spec.retries + 1):
            if attempt:
                await self._sleep(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (attempt - 1)))
            try:
                await channel.send(message)
            except DeliveryFailed as exc:
                why = str(exc)
                continue
            self.sent.append((channel.name, message))
            if channel.name in self._failing:
                self._failing.discard(channel.name)
                self._notice(f"notifications by {channel.name} are delivered again", "info")
            return
        if channel.name not in self._failing:  # said once, until it works again
            self._failing.add(channel.name)
            tries = spec.retries + 1
            self._notice(
                f"notification by {channel.name} failed after {tries} attempt(s): {why}"
                " (further failures of it are not shown)",
                "warning",
            )


def _messages(
    batch: list[_Queued], run_id: str, host: str, spend: dict[str, Spend]
) -> list[tuple[NotifySpec, Message]]:
    """One message per (kind, table), in the order their first alert came."""
    groups: dict[tuple[str, NotifySpec], list[Alert]] = {}
    for item in batch:
        groups.setdefault((item.alert.kind, item.spec), []).append(item.alert)
    return [
        (spec, Message(kind, tuple(alerts), run_id, host, spend))
        for (kind, spec), alerts in groups.items()
    ]
