"""A notification: alerts of one kind gathered in one window, and how each channel
writes it (a JSON document, Slack's `{"text": ...}`, ntfy's text and headers).

The JSON document (also what a `command` gets on stdin) has one shape for one alert
and for many: `event`, `run_id`, `host`, `time`, `title`, `text`, `count`, and per
alert `loop`, `state`, `reason`, `evidence`, `iteration`, `tokens`, `usd`; the fields
of the first alert are repeated at the top level, and `summary` is the run's
summary (`finished`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from supervisor.alerts import TITLES, Alert

MAX_NAMED = 8
"""Loops named in a gathered message's text; the rest are counted."""
PRIORITY = {"attention": "high", "failed": "high", "exhausted": "default", "budget": "default"}


@dataclass(frozen=True, slots=True)
class Spend:
    tokens: int = 0
    usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Message:
    kind: str
    alerts: tuple[Alert, ...]
    run_id: str
    host: str
    spend: Mapping[str, Spend]
    """Per loop, what it spent so far in this run."""

    @property
    def title(self) -> str:
        count = len({a.loop for a in self.alerts if a.loop})
        if count > 1:
            return f"loopvisor: {count} loops {TITLES[self.kind]}"
        return f"loopvisor: {TITLES[self.kind]}"

    @property
    def text(self) -> str:
        if len(self.alerts) == 1:
            return _alert_text(self.alerts[0], self.spend)
        if not any(a.loop for a in self.alerts):  # the run's (budget thresholds)
            return "; ".join(dict.fromkeys(a.reason for a in self.alerts))
        loops = list(dict.fromkeys(a.loop or "run" for a in self.alerts))
        if len(loops) == 1:  # one loop's several (budget thresholds): each reason
            each = "; ".join(dict.fromkeys(a.reason for a in self.alerts))
            return f"{loops[0]}: {TITLES[self.kind]}: {each}"
        named = ", ".join(loops[:MAX_NAMED])
        more = f" (+{len(loops) - MAX_NAMED} more)" if len(loops) > MAX_NAMED else ""
        reasons = list(dict.fromkeys(a.reason for a in self.alerts if a.reason))
        why = f": {reasons[0]}" if len(reasons) == 1 else ""
        return f"{len(self.alerts)} × {TITLES[self.kind]}: {named}{more}{why}"

    def document(self) -> dict[str, Any]:
        """The JSON message (webhook `format = "json"`, the command's stdin)."""
        alerts = [self._alert(a) for a in self.alerts]
        first = alerts[0] if alerts else {}
        doc: dict[str, Any] = {
            "event": self.kind,
            "run_id": self.run_id,
            "host": self.host,
            "time": _iso(self.alerts[0].ts if self.alerts else time.time()),
            "title": self.title,
            "text": self.text,
            "count": len(alerts),
            **{k: first.get(k) for k in ("loop", "state", "reason", "evidence", "iteration")},
            "tokens": sum(a["tokens"] for a in alerts),
            "usd": round(sum(a["usd"] for a in alerts), 6),
            "alerts": alerts,
        }
        summary = next((a.summary for a in self.alerts if a.summary is not None), None)
        if summary is not None:
            doc["summary"] = summary.to_dict()
            doc["tokens"], doc["usd"] = summary.tokens, round(summary.usd, 6)
        return doc

    def slack(self) -> dict[str, Any]:
        """Slack's incoming-webhook body (Mattermost and Discord's /slack take it too)."""
        return {"text": f"*{self.title}* ({self.host}, run {self.run_id})\n{self.text}"}

    def ntfy(self) -> tuple[bytes, dict[str, str]]:
        """ntfy's publish: the text as the body, title, priority and tags as headers."""
        headers = {
            "Title": self.title,
            "Priority": PRIORITY.get(self.kind, "default"),
            "Tags": f"loopvisor,{self.kind}",
        }
        return self.text.encode("utf-8"), headers

    def _alert(self, alert: Alert) -> dict[str, Any]:
        spent = self.spend.get(alert.loop or "", Spend())
        return {
            "loop": alert.loop,
            "state": alert.state,
            "reason": alert.reason,
            "evidence": alert.reason if alert.state == "stuck" else "",
            "iteration": alert.iteration,
            "tokens": spent.tokens,
            "usd": round(spent.usd, 6),
            "time": _iso(alert.ts),
        }


def _alert_text(alert: Alert, spend: Mapping[str, Spend]) -> str:
    if alert.summary is not None:
        s = alert.summary
        counts: dict[str, int] = {}
        for r in s.loops:
            counts[r.state] = counts.get(r.state, 0) + 1
        states = ", ".join(f"{n} {state}" for state, n in counts.items())
        why = f" ({s.reason})" if s.reason else ""
        return (
            f"run finished, exit code {s.exit_code}{why}: {states}; "
            f"{s.tokens:,} tokens, ${s.usd:.4f}, {s.wall_s:.0f}s"
        )
    text = alert.line()
    spent = spend.get(alert.loop or "")
    if alert.iteration or (spent and spent.tokens):
        bits = [f"iteration {alert.iteration}"] if alert.iteration else []
        if spent is not None:
            bits.append(f"{spent.tokens:,} tokens, ${spent.usd:.4f}")
        text += f" ({'; '.join(bits)})"
    return text


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts))
