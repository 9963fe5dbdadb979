"""Plain one-line descriptions of events, shared by the headless printer, the
in-memory transcript tail, `ctl tail` and the TUI (which adds colour on top)."""

from __future__ import annotations

import json

from supervisor import events as ev
from supervisor.sizes import truncation_message


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(event: ev.Event) -> str | None:
    """A line for the transcript, or None for events that are not shown there."""
    if isinstance(event, ev.IterationStarted):
        return f"━━ iteration {event.iteration} ━━"
    if isinstance(event, ev.LoopStateChanged):
        if event.state in ("running", "checking", "pausing"):  # the state column says it
            return None
        wait = f" ({event.wait_seconds:.0f}s)" if event.wait_seconds else ""
        return f"── {event.state}{wait}: {event.reason}" if event.reason else f"── {event.state}"
    if isinstance(event, ev.ToolCalled):
        args = json.dumps(event.input, ensure_ascii=False, sort_keys=True)
        return f"⚙ {event.name}({_short(args, 100)})"
    if isinstance(event, ev.ToolReturned):
        mark = "✘" if event.is_error else "↳"
        first = event.output.strip().splitlines()[0] if event.output.strip() else "(empty)"
        return f"  {mark} {_short(first)}"
    if isinstance(event, ev.CheckStarted):
        return f"▶ check {event.name}: {event.command}"
    if isinstance(event, ev.CheckFinished):
        mark = "✔" if event.passed else "✘"
        return f"{mark} check {event.name}: {event.summary} ({event.duration_s:.1f}s)"
    if isinstance(event, ev.IterationFinished):
        return (
            f"── iteration {event.iteration} {event.outcome}: {_short(event.reason)} "
            f"[{event.tokens:,} tok, ${event.usd:.4f}, {event.duration_s:.1f}s]"
        )
    if isinstance(event, ev.OutputTruncated):
        return truncation_message(event.dropped, event.limit)
    if isinstance(event, ev.StuckDetected):
        return f"⚠ stuck ({event.detector}): {event.evidence} → {event.action}"
    if isinstance(event, ev.ControlApplied):
        detail = f": {_short(event.detail)}" if event.detail else ""
        return f"» operator {event.op}{detail}"
    if isinstance(event, ev.Notice):
        return f"[{event.level}] {event.message}"
    if isinstance(event, ev.BudgetWarning):
        return f"[budget] {event.message}"
    return None
