"""`[notify]` and a loop's `[loop.notify]` to a `NotifySpec`.

A loop's table is merged key by key onto the run's (and a template's onto that), so
`[loop.notify] webhook = "..."` sends that loop's alerts elsewhere and keeps the
run's other settings. The webhook URL is a secret: no message here quotes it.
"""

from __future__ import annotations

from dataclasses import fields
from urllib.parse import urlsplit

from supervisor.config._schema import Table
from supervisor.spec import ALERT_KINDS, WEBHOOK_FORMATS, NotifySpec

NOTIFY_KEYS = frozenset(f.name for f in fields(NotifySpec))
RUN_ONLY_KEYS = frozenset({"coalesce"})
"""One delivery queue per run: its window is the run's, not a loop's."""


def read_notify(t: Table | None, base: NotifySpec, *, loop: bool = False) -> NotifySpec:
    """The settings of `t` over `base` (the run's table for a loop, defaults for it)."""
    if t is None:
        return base
    t.check_keys(NOTIFY_KEYS, "[notify]")
    if loop:
        for key in RUN_ONLY_KEYS & set(t.keys()):
            t.error(key, "is the run's: set it in [notify], not in a loop's table")
    events = t.strings("events", base.events)
    for index, name in enumerate(events):
        if name not in ALERT_KINDS:
            listed = ", ".join(f'"{k}"' for k in ALERT_KINDS)
            t.issues.error(
                (*t.at("events"), index),
                f'{t.label}events[{index}]: unknown event "{name}" (one of {listed})',
            )
    return NotifySpec(
        bell=t.boolean("bell", base.bell),
        desktop=t.boolean("desktop", base.desktop),
        webhook=_webhook(t, base.webhook),
        format=t.choice("format", WEBHOOK_FORMATS, base.format),  # type: ignore[arg-type]
        command=t.strings("command", base.command, nonempty=True),
        events=tuple(dict.fromkeys(e for e in events if e in ALERT_KINDS)),
        timeout=t.duration("timeout", base.timeout),
        retries=t.integer("retries", base.retries, minimum=0),
        coalesce=base.coalesce if loop else t.duration("coalesce", base.coalesce),
    )


def _webhook(t: Table, default: str | None) -> str | None:
    """An http(s) URL with a host; `false` (or "") turns an inherited webhook off."""
    if t.raw("webhook") is False:
        return None
    url = t.string("webhook", default)
    if url is None or url == "":
        return None
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok or any(c.isspace() for c in url):
        # The value is not quoted: a URL that is wrong may still be a real secret.
        t.error("webhook", "expected an http:// or https:// URL (the value is not shown)")
        return default
    return url
