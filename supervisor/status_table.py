"""The loop status table: one definition of its columns and their cells, for every table
of loops (`loopvisor status`, `ctl status`, the run summary, the console's loop table).

A `Column` says what a column is (key, title, alignment) and how its cell is made from
a loop's row, in full (`cell`, plain-text tables) and compact (`short`, the console's
narrow columns). A `Layout` picks columns for one plain-text table with their widths
and the gaps between them; the tables differ only in that choice, so a number is
formatted the same way wherever it appears. What a terminal must not obey (escapes in
loop names and reasons) is shown, not printed raw (`textsafe.for_terminal_line`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from supervisor.events import LoopResult
from supervisor.textsafe import for_terminal_line


class LoopRow(Protocol):
    """What a table needs of a loop (an `api.LoopSnapshot` is one as it is)."""

    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def iteration(self) -> int: ...
    @property
    def max_iterations(self) -> int | None: ...
    @property
    def tokens(self) -> int: ...
    @property
    def usd(self) -> float: ...
    @property
    def reason(self) -> str: ...
    @property
    def attention(self) -> bool: ...
    @property
    def best_score(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class StatusRow:
    """A loop's row from a source that is not a live snapshot (the journal, a summary)."""

    name: str
    state: str
    iteration: int
    tokens: int
    usd: float
    reason: str
    max_iterations: int | None = None
    attention: bool = False
    best_score: float | None = None
    """A metric loop's best score so far (None: not a metric loop, or none yet)."""

    @classmethod
    def of_result(cls, result: LoopResult) -> StatusRow:
        return cls(
            result.name, result.state, result.iterations, result.tokens, result.usd, result.reason
        )


def compact_tokens(n: float) -> str:
    """Tokens in at most 5 characters: 999, 12.3k, 456k, 1.23M."""
    if n < 1000:
        return f"{n:.0f}"
    if n < 999_500:
        return f"{n / 1000:.1f}k" if n < 99_950 else f"{n / 1000:.0f}k"
    return f"{n / 1_000_000:.2f}M" if n < 99_950_000 else f"{n / 1_000_000:.0f}M"


def compact_usd(x: float) -> str:
    """Dollars in at most 7 characters: $0.0042, $12.50, $125."""
    if x < 0.1:
        return f"${x:.4f}"
    if x < 100:
        return f"${x:.2f}"
    return f"${x:.0f}"


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    title: str
    align: Literal["<", ">"]
    cell: Callable[[LoopRow], str]
    """The full cell (plain-text tables)."""
    short: Callable[[LoopRow], str] | None = None
    """A compact cell for a narrow column (the console); None: the full one."""

    def compact(self, row: LoopRow) -> str:
        return (self.short or self.cell)(row)


LOOP = Column("loop", "loop", "<", lambda r: for_terminal_line(r.name))
FLAG = Column("flag", "", "<", lambda r: "!" if r.attention else " ")
"""`!`: the loop waits for a person."""
STATE = Column("state", "state", "<", lambda r: r.state)
ITERATION = Column("iter", "iter", ">", lambda r: str(r.iteration))
ITERATION_OF = Column("iter", "iter", ">", lambda r: f"{r.iteration}/{r.max_iterations}")
TOKENS = Column(
    "tokens", "tokens", ">", lambda r: f"{r.tokens:,}", lambda r: compact_tokens(r.tokens)
)
USD = Column("usd", "usd", ">", lambda r: f"{r.usd:.4f}", lambda r: compact_usd(r.usd))
REASON = Column("reason", "reason", "<", lambda r: for_terminal_line(_reason(r)))


def _reason(row: LoopRow) -> str:
    """The reason, after a metric loop's best score (`best 0.91 · ...`)."""
    if row.best_score is None:
        return row.reason
    return f"best {row.best_score:.6g} · {row.reason}"


@dataclass(frozen=True, slots=True)
class Place:
    """A column in a layout: its width and the gap before it (the last is not padded)."""

    column: Column
    width: int = 0
    gap: str = " "


@dataclass(frozen=True, slots=True)
class Layout:
    places: tuple[Place, ...]
    upper: bool = False
    """Titles in capitals (`loopvisor status`, `history`)."""

    def header(self) -> str:
        titles = [p.column.title.upper() if self.upper else p.column.title for p in self.places]
        return self.line(titles)

    def row(self, row: LoopRow) -> str:
        return self.line([p.column.cell(row) for p in self.places])

    def line(self, cells: Sequence[str]) -> str:
        """Cells under the columns, from the first; fewer cells end the line early (a total)."""
        out = []
        last = len(self.places) - 1
        for i, (place, cell) in enumerate(zip(self.places, cells, strict=False)):
            width = 0 if i == last else place.width
            out.append(place.gap if i else "")
            out.append(f"{cell:{place.column.align}{width}}")
        return "".join(out)

    def table(self, rows: Sequence[LoopRow]) -> list[str]:
        return [self.header(), *(self.row(r) for r in rows)]


def name_width(rows: Sequence[LoopRow], least: int = 12) -> int:
    """Wide enough for every (escaped) loop name, and at least `least`."""
    return max([least, *(len(for_terminal_line(r.name)) for r in rows)])


def status_layout() -> Layout:
    """`loopvisor status` (from the journal)."""
    return Layout(
        (
            Place(LOOP, 20),
            Place(STATE, 10),
            Place(ITERATION, 4),
            Place(TOKENS, 10),
            Place(USD, 9),
            Place(REASON, gap="  "),
        ),
        upper=True,
    )


def ctl_status_layout(loop_width: int) -> Layout:
    """`loopvisor ctl status` (a live snapshot: `!` marks a loop that waits for a person)."""
    return Layout(
        (
            Place(LOOP, loop_width),
            Place(FLAG, 1, "  "),
            Place(STATE, 10),
            Place(ITERATION_OF, 9),
            Place(TOKENS, 10),
            Place(USD, 9),
            Place(REASON, gap="  "),
        )
    )


def summary_layout(loop_width: int) -> Layout:
    """The run summary (headless, and after the console)."""
    return Layout(
        (
            Place(LOOP, loop_width),
            Place(STATE, 10, "  "),
            Place(ITERATION, 4),
            Place(TOKENS, 9),
            Place(USD, 9),
            Place(REASON, gap="  "),
        )
    )
