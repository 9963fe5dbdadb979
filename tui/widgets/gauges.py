"""BudgetGauges: the global ledger at a glance (tokens, USD, wall, CPU, slots).

One compact bar per dimension, packed two or four to a line by width, then a line
with slots in use, the burn rate over a sliding window and the projected time until
the first limit runs out. The widget only re-renders when its data changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widget import Widget

from supervisor.api import BudgetSnapshot
from tui import format as fmt
from tui.model import Burn, minutes_left


@dataclass(frozen=True, slots=True)
class GaugeData:
    budget: BudgetSnapshot
    burn: Burn | None
    needs_person: int = 0
    finished: str = ""
    """Set once the run ended: its one-line summary."""
    disconnected: str = ""
    """Set while an attached console has lost its server: everything else is stale."""


def _share_style(share: float | None) -> str:
    if share is None:
        return "dim"
    if share >= 1.0:
        return "bold red"
    return "bold yellow" if share >= 0.8 else "green"


def gauge(label: str, used: float, limit: float | None, text: str, width: int) -> Text:
    """`label ███░░░ text 42%` in exactly `width` cells."""
    share = None if not limit else used / limit
    pct = "" if share is None else f" {fmt.percent(share)}"
    value = f"{text}{pct}"
    bar_width = max(3, width - len(label) - len(value) - 3)
    out = Text(f"{label} ", style="bold")
    if share is None:
        out.append("·" * bar_width, style="dim")
    else:
        filled = min(bar_width, round(bar_width * min(share, 1.0)))
        out.append("█" * filled, style=_share_style(share))
        out.append("░" * (bar_width - filled), style="dim")
    out.append(f" {text}")
    out.append(pct, style=_share_style(share))
    out.truncate(width, pad=True)
    return out


def gauges(data: GaugeData) -> list[tuple[str, float, float | None, str]]:
    b = data.budget
    lim = b.limits

    def of(used: str, limit: str | None) -> str:
        return used if limit is None else f"{used}/{limit}"

    return [
        (
            "tokens",
            b.tokens,
            lim.tokens,
            of(fmt.tokens(b.tokens), None if lim.tokens is None else fmt.tokens(lim.tokens)),
        ),
        ("USD", b.usd, lim.usd, of(fmt.usd(b.usd), None if lim.usd is None else fmt.usd(lim.usd))),
        (
            "wall",
            b.wall_s,
            lim.wall,
            of(fmt.seconds(b.wall_s), None if lim.wall is None else fmt.seconds(lim.wall)),
        ),
        (
            "CPU",
            b.cpu_s,
            lim.cpu,
            of(fmt.seconds(b.cpu_s), None if lim.cpu is None else fmt.seconds(lim.cpu)),
        ),
    ]


def burn_line(data: GaugeData) -> Text:
    b = data.budget
    out = Text("slots ", style="bold")
    busy = min(b.slots_in_use, b.slots_total)
    if b.slots_total <= 12:
        out.append("▰" * busy, style="green")
        out.append("▱" * (b.slots_total - busy), style="dim")
    out.append(f" {b.slots_in_use}/{b.slots_total}")
    if data.disconnected:
        out.append(" · ", style="dim")
        out.append(data.disconnected, style="bold reverse red")
        return out
    if data.finished:
        out.append(" · ", style="dim")
        out.append(data.finished, style="bold")
        return out
    burn = data.burn
    out.append(" · burn ", style="dim")
    if burn is None:
        out.append("measuring…", style="dim")
    else:
        out.append(f"{fmt.tokens(burn.tokens_per_min)} tok/min · {fmt.usd(burn.usd_per_min)}/min")
        lim = b.limits
        etas = {
            "tokens": minutes_left(b.tokens, lim.tokens, burn.tokens_per_min),
            "USD": minutes_left(b.usd, lim.usd, burn.usd_per_min),
            "CPU": minutes_left(b.cpu_s, lim.cpu, burn.cpu_per_min),
            "wall": None if lim.wall is None else max(0.0, lim.wall - b.wall_s) / 60,
        }
        known = {k: v for k, v in etas.items() if v is not None}
        if known:
            first = min(known, key=lambda k: known[k])
            style = "bold yellow" if known[first] < 10 else ""
            out.append(f" · {first} out in {fmt.minutes(known[first])}", style=style)
    if data.needs_person:
        n = data.needs_person
        out.append(f" · {n} need{'s' if n == 1 else ''} you", style="bold magenta")
    return out


class BudgetGauges(Widget):
    DEFAULT_CSS = """
    BudgetGauges {
        height: auto;
        padding: 0 1;
        background: $panel;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.data: GaugeData | None = None
        self._lines = 0

    def update_data(self, data: GaugeData) -> None:
        if data != self.data:
            self.data = data
            # Height depends only on the width (lines of bars): repaint, no layout pass.
            self.refresh(layout=self._lines != self._line_count())

    def _line_count(self) -> int:
        width = max(20, self.size.width or 78)
        per_line = 4 if width >= 150 else 2 if width >= 70 else 1
        return -(-4 // per_line) + 1

    def render(self) -> Text:
        data = self.data
        if data is None:
            return Text("waiting for the supervisor…", style="dim")
        width = max(20, self.size.width or 78)
        per_line = 4 if width >= 150 else 2 if width >= 70 else 1
        cell = (width - 2 * (per_line - 1)) // per_line
        cells = [gauge(*g, cell) for g in gauges(data)]
        lines = []
        for i in range(0, len(cells), per_line):
            lines.append(Text("  ").join(cells[i : i + per_line]))
        tail = burn_line(data)
        tail.truncate(width, overflow="ellipsis")
        lines.append(tail)
        self._lines = len(lines)
        return Text("\n").join(lines)
