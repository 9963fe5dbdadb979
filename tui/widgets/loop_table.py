"""LoopTable: one row per loop (row key = loop name), people-first order, filterable.

`show()` takes a whole snapshot and touches only what changed: cells are compared
with what the table already shows and updated with `update_cell` (the caller wraps
the call in one `batch_update`), and rows are rebuilt only when the visible set or
its order changed (a loop started needing a person, or the filter changed). The
cursor stays on the same loop through rebuilds.

Rendering: a DataTable renders each cell through Rich (Padding, Styled, line
splitting) and keys its row cache on the cursor position and a table-wide update
counter, so any cursor move or cell update re-renders every visible row (~1 ms a
cell: 15-20 ms a frame at 160x48, the main cost of a keypress under load). This
subclass keeps DataTable's API (row keys, cursor, scrolling, messages) but renders
its own rows: one segment per cell from the plain text and style it already keeps
for change detection, cached per row version; a cursor move re-renders two rows
and a cell update one. It overrides a DataTable internal (`_render_line_in_row`),
checked against Textual 8.2.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

from supervisor.api import LoopSnapshot
from supervisor.status_table import ITERATION_OF, LOOP, STATE, TOKENS, USD, Column
from tui import format as fmt

ColumnSpec = tuple[str, str, int, int, str]
"""key, label, narrow width (fits 80 columns), widest useful width, justify."""


def _column(column: Column, narrow: int, widest: int, label: str | None = None) -> ColumnSpec:
    """A column of the status table (`supervisor.status_table`): its key, title (or
    `label` here) and alignment; its cells come from the same definition."""
    justify = "right" if column.align == ">" else "left"
    return (column.key, column.title if label is None else label, narrow, widest, justify)


COLUMNS: tuple[ColumnSpec, ...] = (
    ("mark", "", 1, 1, "left"),
    _column(LOOP, 12, 24),
    _column(STATE, 11, 44),
    _column(ITERATION_OF, 5, 7),
    ("check", "check", 9, 44, "left"),
    _column(TOKENS, 6, 7),
    _column(USD, 7, 8, label="USD"),
    ("share", "bdgt", 4, 5, "right"),
    ("elapsed", "time", 5, 6, "right"),
)
"""The status table's columns the console shows (compact cells), and its own: the
marker, the last check, the budget share and the elapsed time."""
GROWS = (LOOP.key, STATE.key, "check")
"""Columns that take the width beyond 80 columns (in this order, round robin)."""
WIDE_STATE = 20
"""From this state width on, the badge also shows the reason."""


def column_widths(total: int, padding: int = 1) -> tuple[int, ...]:
    """Column widths that fill `total` cells (minus the scrollbar), never below narrow."""
    widths = [c[2] for c in COLUMNS]
    room = total - 1 - sum(widths) - 2 * padding * len(COLUMNS)
    fixed = {c[0]: i for i, c in enumerate(COLUMNS)}
    for key in ("iter", "tokens", "usd", "share", "elapsed"):  # small ones first
        i = fixed[key]
        grow = min(room, COLUMNS[i][3] - widths[i])
        if grow > 0:
            widths[i] += grow
            room -= grow
    growing = [fixed[key] for key in GROWS]
    while room > 0 and any(widths[i] < COLUMNS[i][3] for i in growing):
        for i in growing:
            if room > 0 and widths[i] < COLUMNS[i][3]:
                widths[i] += 1
                room -= 1
    return tuple(widths)


COLUMN_INDEX = {column[0]: i for i, column in enumerate(COLUMNS)}
Cell = tuple[str, str]
"""Plain text and style of one cell: what is compared to decide on an update."""
SegmentLines = list[list[Segment]]


@lru_cache(maxsize=1024)
def _combine(base: Style, definition: str, over: Style | None) -> Style:
    style = base + (Style.parse(definition) if definition else Style())
    return style + over if over is not None else style


@lru_cache(maxsize=16384)
def _meta(row: int, column: int) -> Style:
    """Row and column for DataTable's mouse handling (a click selects the row)."""
    return Style.from_meta({"row": row, "column": column})


def row_cells(loop: LoopSnapshot, wait_left: float | None, *, wide: bool) -> tuple[Cell, ...]:
    person = fmt.needs_person(loop)
    share = fmt.share(loop)
    check, check_style = fmt.check_text(loop)
    return (
        fmt.marker(loop),
        (LOOP.compact(loop), "bold" if person else ""),
        (fmt.state_text(loop, wait_left, wide=wide), fmt.STATE_STYLE.get(loop.state, "")),
        (ITERATION_OF.compact(loop), ""),
        (check, check_style),
        (TOKENS.compact(loop), ""),
        (USD.compact(loop), ""),
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
        self.query_text = ""
        self.order: list[str] = []
        """Row keys as displayed."""
        self._cells: dict[str, tuple[Cell, ...]] = {}
        self._widths: tuple[int, ...] = ()
        self._versions: dict[str, int] = {}
        self._epoch = 0
        self._row_cache: LRUCache[tuple[object, ...], SegmentLines] = LRUCache(4096)
        self._component_cache: dict[tuple[str, object], Style] = {}
        self.on_cursor: Callable[[], None] | None = None
        """Called as soon as the cursor moves to another row (before RowHighlighted)."""

    def watch_cursor_coordinate(self, old: Coordinate, new: Coordinate) -> None:
        super().watch_cursor_coordinate(old, new)
        if self.on_cursor is not None and old.row != new.row:
            self.on_cursor()  # now, not a message hop later: keys feel immediate under load

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

    # -- rendering (see the module docstring) ------------------------------------
    def _render_line_in_row(
        self,
        row_key: RowKey,
        line_no: int,
        base_style: Style,
        cursor_location: Coordinate,
        hover_location: Coordinate,
    ) -> tuple[SegmentLines, SegmentLines]:
        index = self._row_locations.get(row_key)
        name = str(row_key.value)
        cursor = index is not None and self.show_cursor and cursor_location.row == index
        key = (
            name,
            self._epoch,
            self._versions.get(name, 0),
            cursor,
            base_style,
            self._pseudo_class_state,
        )
        row = self._row_cache.get(key)
        if row is None:
            row = self._render_row(name, index, cursor, base_style)
            self._row_cache[key] = row
        return [], row

    def _render_row(
        self, name: str, index: int | None, cursor: bool, base_style: Style
    ) -> SegmentLines:
        if not self._widths:  # before the first snapshot: no columns yet
            return []
        if index is None:  # the header
            cells: Sequence[Cell] = [(label, "") for _, label, *_ in COLUMNS]
            over: Style | None = self._component("datatable--header")
            index = -1
        else:
            cells = self._cells.get(name, ())
            over = self._component("datatable--cursor") if cursor else None
        pad = " " * self.cell_padding
        out: SegmentLines = []
        for i, (text, style) in enumerate(cells):
            width = self._widths[i]
            text = fmt.clip(text, width)
            gap = " " * max(0, width - cell_len(text))
            body = gap + text if COLUMNS[i][4] == "right" else text + gap
            full = _combine(base_style, style, over) + _meta(index, i)
            out.append([Segment(pad + body + pad, full)])
        return out

    def _component(self, name: str) -> Style:
        key = (name, self._pseudo_class_state)
        style = self._component_cache.get(key)
        if style is None:
            style = self._component_cache[key] = self.get_component_rich_style(name)
        return style

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._row_cache.clear()
        self._component_cache.clear()

    def update_cell(
        self,
        row_key: RowKey | str,
        column_key: ColumnKey | str,
        value: Text,
        *,
        update_width: bool = False,
    ) -> None:
        """DataTable's API, kept working: the cell is what `_render_row` shows."""
        super().update_cell(row_key, column_key, value, update_width=update_width)
        name = str(row_key.value if isinstance(row_key, RowKey) else row_key)
        column = str(column_key.value if isinstance(column_key, ColumnKey) else column_key)
        row = list(self._cells[name])
        row[COLUMN_INDEX[column]] = (value.plain, str(value.style))
        self._cells[name] = tuple(row)
        self._versions[name] = self._versions.get(name, 0) + 1

    def clear(self, columns: bool = False) -> LoopTable:
        self._epoch += 1
        return super().clear(columns)

    @property
    def wide(self) -> bool:
        return bool(self._widths) and self._widths[COLUMN_INDEX["state"]] >= WIDE_STATE

    def _setup_columns(self, widths: tuple[int, ...]) -> None:
        self.clear(columns=True)
        self._widths = widths
        for (key, label, *_), width in zip(COLUMNS, widths, strict=True):
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
    ) -> list[tuple[str, str]]:
        """Make the table show `loops` (call inside `app.batch_update()`); returns the
        (loop, column) cells that changed (all of them after a rebuild)."""
        widths = column_widths(self.size.width or self.app.size.width, self.cell_padding)
        focused = self.focused_loop
        if widths != self._widths:
            self._setup_columns(widths)  # forgets the rows, so the cursor: keep `focused`
        wide = self.wide
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
            self._rebuild(keys, cells, focused)
            return [(key, column[0]) for key in keys for column in COLUMNS]
        # Rows render from `_cells` (see `_render_row`), so a change is one dict write
        # and a version bump, not a DataTable.update_cell per cell: 1,000 rows stay cheap.
        changed: list[tuple[str, str]] = []
        for key, row in cells.items():
            old = self._cells.get(key)
            if old == row:
                continue
            changed += [
                (key, COLUMNS[i][0]) for i, cell in enumerate(row) if old is None or old[i] != cell
            ]
            self._cells[key] = row
            self._versions[key] = self._versions.get(key, 0) + 1
        if changed:
            self._update_count += 1  # DataTable's line cache
            self.refresh()
        return changed

    def get_cell(self, row_key: RowKey | str, column_key: ColumnKey | str) -> Text:
        """What the cell shows (rows are kept in `_cells`, not in DataTable's data)."""
        name = str(row_key.value if isinstance(row_key, RowKey) else row_key)
        column = str(column_key.value if isinstance(column_key, ColumnKey) else column_key)
        index = COLUMN_INDEX[column]
        return self._text(self._cells[name][index], index)

    def _rebuild(
        self, keys: list[str], cells: dict[str, tuple[Cell, ...]], focused: str | None
    ) -> None:
        self.clear()
        for key in keys:
            self.add_row(*(Text() for _ in COLUMNS), key=key)
        self.order = keys
        self._cells = cells
        if focused in keys:
            self.move_cursor(row=keys.index(focused), scroll=True)
