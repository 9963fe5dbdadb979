"""Transcript lines made from events, each with its kind: shared by the loop's
transcript tail, the headless printer, `ctl tail` and the console (which colours
them by kind). The kind is decided here, with the text, for every event that has a
line; agent output takes its stream's kind (`lines.stream_kind`)."""

from __future__ import annotations

import json

from supervisor import events as ev
from supervisor.lines import NOTICE_KINDS, LineKind, TranscriptLine
from supervisor.sizes import truncation_message

K = LineKind


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(event: ev.Event) -> TranscriptLine | None:
    """The event's transcript line, or None for events that are not shown there."""
    if isinstance(event, ev.IterationStarted):
        return TranscriptLine(K.ITERATION, f"━━ iteration {event.iteration} ━━")
    if isinstance(event, ev.LoopStateChanged):
        if event.state in ("running", "checking", "pausing"):  # the state column says it
            return None
        wait = f" ({event.wait_seconds:.0f}s)" if event.wait_seconds else ""
        text = f"── {event.state}{wait}: {event.reason}" if event.reason else f"── {event.state}"
        return TranscriptLine(K.STATE, text)
    if isinstance(event, ev.ToolCalled):
        args = json.dumps(event.input, ensure_ascii=False, sort_keys=True)
        return TranscriptLine(K.TOOL, f"⚙ {event.name}({_short(args, 100)})")
    if isinstance(event, ev.ToolReturned):
        first = event.output.strip().splitlines()[0] if event.output.strip() else "(empty)"
        if event.is_error:
            return TranscriptLine(K.RESULT_ERROR, f"  ✘ {_short(first)}")
        return TranscriptLine(K.RESULT, f"  ↳ {_short(first)}")
    if isinstance(event, ev.CheckStarted):
        return TranscriptLine(K.CHECK, f"▶ check {event.name}: {event.command}")
    if isinstance(event, ev.CheckFinished):
        mark, kind = ("✔", K.CHECK_PASS) if event.passed else ("✘", K.CHECK_FAIL)
        return TranscriptLine(
            kind, f"{mark} check {event.name}: {event.summary} ({event.duration_s:.1f}s)"
        )
    if isinstance(event, ev.IterationFinished):
        commit = f", commit {event.commit[:10]}" if event.commit else ""
        return TranscriptLine(
            K.ITERATION_END,
            f"── iteration {event.iteration} {event.outcome}: {_short(event.reason)} "
            f"[{event.tokens:,} tok, ${event.usd:.4f}, {event.duration_s:.1f}s{commit}]",
        )
    if isinstance(event, ev.LoopForked):
        return TranscriptLine(
            K.OPERATOR, f"⑂ forked from {event.label} at commit {event.commit[:10]}"
        )
    if isinstance(event, ev.OutputTruncated):
        return TranscriptLine(K.WARNING, truncation_message(event.dropped, event.limit))
    if isinstance(event, ev.StuckDetected):
        return TranscriptLine(
            K.STUCK, f"⚠ stuck ({event.detector}): {event.evidence} → {event.action}"
        )
    if isinstance(event, ev.ControlApplied):
        detail = f": {_short(event.detail)}" if event.detail else ""
        return TranscriptLine(K.OPERATOR, f"» operator {event.op}{detail}")
    if isinstance(event, ev.Notice):
        return TranscriptLine(
            NOTICE_KINDS.get(event.level, K.INFO), f"[{event.level}] {event.message}"
        )
    if isinstance(event, ev.BudgetWarning):
        return TranscriptLine(K.WARNING, f"[budget] {event.message}")
    return None
