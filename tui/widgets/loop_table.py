"""LoopTable: one row per loop (row key = loop name), people-first order, filterable.

`show()` takes a whole snapshot and touches only what changed: cells are compared
with what the table already shows and updated with `update_cell` (the caller wraps
the call in one `batch_update`), and rows are rebuilt only when the visible set or
its order changed (a loop started needing a person, or the filter changed). The
cursor stays on the same loop through rebuilds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from supervisor.api import LoopSnapshot

from .. import format as fmt

WIDE_AT = 110
"""Terminal width from which the table shows state reasons and longer checks."""
COLUMNS: tuple[tuple[str, str, int, int, str], ...] = (
    # key, label, narrow width, wide width, justify
    ("mark", "", 1, 1, "left"),
    ("name", "loop", 12, 20, "left"),
    ("state", "state", 11, 30, "left"),
    ("iter", "iter", 5, 7, "right"),
    ("check", "check", 9, 30, "left"),
    ("tokens", "tokens", 6, 7, "right"),
    ("usd", "USD", 7, 8, "right"),
    ("share", "bdgt", 4, 6, "right"),
    ("elapsed", "time", 5, 6, "right"),
)
Cell = tuple[str, str]
"""Plain text and style of one cell: what is compared to decide on an update."""


def row_cells(loop: LoopSnapshot, wait_left: float | None, *, wide: bool) -> tuple[Cell, ...]:
    person = fmt.needs_person(loop)
    share = fmt.share(loop)
    check, check_style = fmt.check_text(loop)
    return (
        fmt.marker(loop),
        (loop.name, "bold" if person else ""),
        (fmt.state_text(loop, wait_left, wide=wide), fmt.STATE_STYLE.get(loop.state, "")),
        (f"{loop.iteration}/{loop.max_iterations}", ""),
        (check, check_style),
        (fmt.tokens(loop.tokens), ""),
        (fmt.usd(loop.usd), ""),
        (fmt.percent(share), fmt.share_style(share)),
        (fmt.seconds(loop.elapsed_s) if loop.started_at is not None else "—", "dim"),
    )


def matches(loop: LoopSnapshot, query: str) -> bool:
    query = query.strip().lower()
    return not query or query in loop.name.lower() or query in loop.state


class LoopTable(DataTable[Text]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "step in"),
        Binding("j", "cursor_down", "down", show=False),
        Binding("k", "cursor_up", "up", show=False),
    ]
    DEFAULT_CSS = """
    LoopTable {
        scrollbar-size-vertical: 1;
        & > .datatable--header { text-style: bold; }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", cell_padding=1)
        self.wide: bool | None = None
        self.query_text = ""
        self.order: list[str] = []
        """Row keys as displayed."""
        self._cells: dict[str, tuple[Cell, ...]] = {}
        self._widths: tuple[int, ...] = ()

    @property
    def focused_loop(self) -> str | None:
        if not self.order or not self.is_valid_row_index(self.cursor_row):
            return None
        return self.order[self.cursor_row]

    def focus_loop(self, name: str) -> bool:
        if name not in self.order:
            return False
        self.move_cursor(row=self.order.index(name))
        return True

    def _setup_columns(self, wide: bool) -> None:
        self.clear(columns=True)
        self.wide = wide
        self._widths = tuple(c[3] if wide else c[2] for c in COLUMNS)
        for (key, label, *_), width in zip(COLUMNS, self._widths, strict=True):
            self.add_column(label, width=width, key=key)
        self.order = []
        self._cells = {}

    def _text(self, cell: Cell, index: int) -> Text:
        text, style = cell
        width = self._widths[index]
        justify = COLUMNS[index][4]
        return Text(
            fmt.clip(text, width),
            style=style,
            no_wrap=True,
            justify="right" if justify == "right" else "left",
        )

    def show(
        self,
        loops: Sequence[LoopSnapshot],
        wait_deadlines: Mapping[str, float],
        now: float,
    ) -> None:
        """Make the table show `loops` (call inside `app.batch_update()`)."""
        width = self.size.width or self.app.size.width
        wide = width >= WIDE_AT
        if wide != self.wide:
            self._setup_columns(wide)
        position = {loop.name: i for i, loop in enumerate(loops)}
        visible = sorted(
            (loop for loop in loops if matches(loop, self.query_text)),
            key=lambda loop: (not fmt.needs_person(loop), position[loop.name]),
        )
        cells: dict[str, tuple[Cell, ...]] = {}
        for loop in visible:
            deadline = wait_deadlines.get(loop.name)
            left = None if deadline is None else max(0.0, deadline - now)
            cells[loop.name] = row_cells(loop, left, wide=wide)
        keys = [loop.name for loop in visible]
        if keys != self.order:
            self._rebuild(keys, cells)
            return
        columns = [c[0] for c in COLUMNS]
        for key, row in cells.items():
            old = self._cells.get(key)
            if old == row:
                continue
            for i, cell in enumerate(row):
                if old is None or old[i] != cell:
                    self.update_cell(key, columns[i], self._text(cell, i))
            self._cells[key] = row

    def _rebuild(self, keys: list[str], cells: dict[str, tuple[Cell, ...]]) -> None:
        focused = self.focused_loop
        self.clear()
        for key in keys:
            row = cells[key]
            self.add_row(*(self._text(c, i) for i, c in enumerate(row)), key=key)
        self.order = keys
        self._cells = cells
        if focused in keys:
            self.move_cursor(row=keys.index(focused), scroll=True)
