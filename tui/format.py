"""Short cell texts and colours for loops and budgets (transcript lines are coloured by
their kind: `widgets.transcript`).

Widths matter: at 80 columns the loops table has ~60 cells of content, so every
number has a compact form ("12.3k", "$0.0042", "12:03").
"""

from __future__ import annotations

from collections import Counter

from supervisor import events as ev
from supervisor.api import LoopSnapshot, RunSnapshot
from supervisor.status_table import compact_tokens, compact_usd

NEEDS_PERSON = frozenset({"paused", "stuck", "failed"})
"""States that sort first and are coloured: a person has to act."""

STATE_STYLE: dict[str, str] = {
    "pending": "dim",
    "running": "bold green",
    "checking": "cyan",
    "waiting": "yellow",
    "pausing": "magenta",
    "paused": "bold magenta",
    "stuck": "bold red",
    "scheduled": "blue",
    "succeeded": "green",
    "failed": "bold red",
    "exhausted": "yellow",
    "stopped": "dim",
}


def needs_person(loop: LoopSnapshot) -> bool:
    return loop.attention or loop.state in NEEDS_PERSON


tokens = compact_tokens
usd = compact_usd


def seconds(s: float) -> str:
    """Elapsed time in at most 5 characters: 42s, 12:03, 3h07m, 27h."""
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        m, sec = divmod(int(s), 60)
        return f"{m}:{sec:02d}"
    h, rest = divmod(int(s), 3600)
    return f"{h}h{rest // 60:02d}m" if h < 10 else f"{h}h"


def minutes(m: float) -> str:
    """A projected duration: ~45s, ~12m, ~3.5h, >99h."""
    if m < 1:
        return f"~{m * 60:.0f}s"
    if m < 120:
        return f"~{m:.0f}m"
    if m < 99 * 60:
        return f"~{m / 60:.1f}h"
    return ">99h"


def share(loop: LoopSnapshot) -> float | None:
    """The larger of the loop's token and USD shares of its own budget."""
    shares = []
    if loop.limits.tokens:
        shares.append(loop.tokens / loop.limits.tokens)
    if loop.limits.usd:
        shares.append(loop.usd / loop.limits.usd)
    return max(shares) if shares else None


def percent(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{min(value, 9.99) * 100:.0f}%"


def share_style(value: float | None) -> str:
    if value is None:
        return "dim"
    if value >= 1.0:
        return "bold red"
    return "yellow" if value >= 0.8 else ""


def state_text(loop: LoopSnapshot, wait_left: float | None, *, wide: bool) -> str:
    """The badge: the state, and for `waiting` the seconds left and (wide) the reason."""
    if loop.state != "waiting":
        if wide and loop.state in NEEDS_PERSON | {"exhausted"} and loop.reason:
            return f"{loop.state}: {loop.reason}"
        return loop.state
    left = wait_left if wait_left is not None else loop.wait_seconds
    head = f"waiting {left:.0f}s" if left is not None else "waiting"
    return f"{head}: {loop.reason}" if loop.reason and wide else head


def check_text(loop: LoopSnapshot) -> tuple[str, str]:
    if loop.last_check is None:
        return "—", "dim"
    if loop.last_check_passed:
        return f"✔ {loop.last_check}", "green"
    return f"✘ {loop.last_check}", "red"


def marker(loop: LoopSnapshot) -> tuple[str, str]:
    if loop.state == "stuck":
        return "!", "bold red"
    if loop.state == "failed":
        return "✘", "bold red"
    if needs_person(loop):
        return "●", "bold magenta"
    return " ", ""


def run_over(snapshot: RunSnapshot, summary: ev.RunFinished | None) -> str:
    """The banner "run finished · exit code N · why" once the run is over, else "".

    The local console keeps its run open after the last loop ends (a loop can still be
    restarted), so "over" comes from the snapshot's exit code, not only the summary."""
    if summary is not None:
        code, reason = summary.exit_code, summary.reason
    elif snapshot.exit_code is not None:
        code, reason = snapshot.exit_code, snapshot.end_reason
    else:
        return ""
    if not reason:
        counts = Counter(loop.state for loop in snapshot.loops)
        reason = ", ".join(f"{n} {state}" for state, n in counts.items())
    return f"run finished · exit code {code} · {reason}"


def clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"
