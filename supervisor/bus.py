"""Event fan-out from the core to its subscribers, without ever blocking a loop.

Two kinds of listener:
- sinks: synchronous callables that must see every event (the journal's batcher:
  it only appends to a list, no I/O);
- subscribers: bounded memory streams (TUI, socket clients, printer). A subscriber
  that falls behind loses events, and gets one `EventsDropped` record saying how
  many before the next event that fits, so a UI can resync from a snapshot.

Every event passes `redact` first (the supervisor's `Redactor`), so no listener,
the journal included, ever sees a secret that reached an event's text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from supervisor.events import Event, EventsDropped


@dataclass(slots=True)
class _Subscriber:
    send: MemoryObjectSendStream[Event]
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class BusStatistics:
    published: int
    subscribers: int
    dropped: int


def _unchanged(event: Event) -> Event:
    return event


@dataclass(slots=True)
class EventBus:
    redact: Callable[[Event], Event] = _unchanged
    sinks: list[Callable[[Event], None]] = field(default_factory=list)
    _subscribers: list[_Subscriber] = field(default_factory=list)
    _published: int = 0
    _dropped: int = 0

    def add_sink(self, sink: Callable[[Event], None]) -> None:
        self.sinks.append(sink)

    def publish(self, event: Event) -> None:
        event = self.redact(event)
        self._published += 1
        for sink in self.sinks:
            sink(event)
        for sub in list(self._subscribers):
            try:
                if sub.dropped:
                    sub.send.send_nowait(EventsDropped(count=sub.dropped))
                    sub.dropped = 0
                sub.send.send_nowait(event)
            except anyio.WouldBlock:
                sub.dropped += 1
                self._dropped += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.remove(sub)

    @asynccontextmanager
    async def subscribe(
        self, max_buffer: int = 1000
    ) -> AsyncIterator[MemoryObjectReceiveStream[Event]]:
        send, receive = anyio.create_memory_object_stream[Event](max_buffer)
        sub = _Subscriber(send)
        self._subscribers.append(sub)
        try:
            async with receive:
                yield receive
        finally:
            if sub in self._subscribers:
                self._subscribers.remove(sub)
            send.close()

    def close(self) -> None:
        """End every subscription (their iterators finish after draining)."""
        for sub in self._subscribers:
            sub.send.close()
        self._subscribers.clear()

    def statistics(self) -> BusStatistics:
        return BusStatistics(self._published, len(self._subscribers), self._dropped)
