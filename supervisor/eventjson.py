"""Each event JSON-encoded once, for the journal and the JSON printer both.

Output is most of what a run publishes (a child's output is one event per pipe read,
up to ~64 KiB), and encoding it is the cost of the output path: JSON-escaping 64 KiB
takes ~90 us. The journal (its rows) and `run --json` (its lines) each encoded every
event, where a bare reader encodes once (issue 12). Here the first of them to ask
encodes the event (`event_json`; of an output event only its text, `text_json`, since
the journal merges a loop's consecutive chunks into one row) and the other reuses it,
for the same event object: both are bus sinks under `run`, called one after the other
as the event is published, so a small cache by identity is enough. It is bounded in
entries and characters: a consumer that asks much later (a subscriber that fell
behind) only costs an encode again, never memory.

The encoding is `textsafe.json_text`: valid UTF-8, with DEL, C1 controls, bidi
overrides and U+2028/9 escaped. It is what the printer always wrote; the journal
stored those characters unescaped before, which parses to the same values.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from supervisor.events import AgentOutput, Event
from supervisor.textsafe import json_text

CACHE_ENTRIES = 64
CACHE_CHARS = 4 * 1024 * 1024
"""What the cache holds at most (a whole pipe read is up to ~64 KiB)."""
NAMES = 4096
"""Loop and stream names whose JSON is kept (they repeat in every output event)."""

_cache: OrderedDict[int, tuple[Event, str]] = OrderedDict()
_chars = 0
_names: dict[str, str] = {}
encodes = 0
"""Events (or output texts) encoded so far (the regression tests count these)."""


def event_json(event: Event) -> str:
    """`json_text(event.to_dict())`, made once per event however many ask."""
    if type(event) is AgentOutput:
        return output_line(event)
    return _once(event, lambda: json_text(event.to_dict()))


def text_json(event: AgentOutput) -> str:
    """`json_text(event.text)`, encoded once per event however many ask."""
    return _once(event, lambda: json_text(event.text))


def _once(event: Event, encode: Callable[[], str]) -> str:
    """Called on the event loop's thread (where the bus hands events to its sinks): a
    model's output comes in many small chunks, so this stays a few dict operations."""
    global _chars, encodes
    key = id(event)
    hit = _cache.get(key)
    if hit is not None:
        if hit[0] is event:
            return hit[1]
        _chars -= len(hit[1])  # a dead event's id, reused
    encoded = encode()
    encodes += 1
    _cache[key] = (event, encoded)
    _chars += len(encoded)
    while len(_cache) > CACHE_ENTRIES or (_chars > CACHE_CHARS and len(_cache) > 1):
        _, (_, dropped) = _cache.popitem(last=False)
        _chars -= len(dropped)
    return encoded


def _name_json(name: str) -> str:
    """`json_text(name)` of a loop or stream name, kept: they repeat in every line."""
    encoded = _names.get(name)
    if encoded is None:
        encoded = json_text(name)
        if len(_names) < NAMES:
            _names[name] = encoded
    return encoded


def output_line(event: AgentOutput) -> str:
    """The event as `run --json` prints it: exactly `json_text(event.to_dict())`
    (the same keys in the same order), its text encoded once (`text_json`)."""
    return "".join(output_line_parts(event))


def output_line_parts(event: AgentOutput) -> tuple[str, str, str]:
    """`output_line` in three pieces, the text's encoding whole in the middle: a writer
    that joins its lines anyway need not copy the text once more to make the line."""
    return (
        f'{{"type": "output", "ts": {event.ts!r}, "loop": {_name_json(event.loop)}, '
        f'"iteration": {event.iteration!r}, "text": ',
        text_json(event),
        f', "stream": {_name_json(event.stream)}}}',
    )


def output_row(ts: float, loop: str, iteration: int, texts: list[str], stream: str) -> str:
    """A journal row's JSON for consecutive output `texts` (JSON literals, `text_json`)
    of one loop, iteration and stream: their bodies joined, as the joined text's own
    literal would be (JSON escapes one character at a time)."""
    text = texts[0] if len(texts) == 1 else '"' + "".join(t[1:-1] for t in texts) + '"'
    return (
        f'{{"type": "output", "ts": {ts!r}, "loop": {_name_json(loop)}, '
        f'"iteration": {iteration!r}, "text": {text}, "stream": {_name_json(stream)}}}'
    )
