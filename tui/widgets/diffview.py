"""DiffView: a patch, coloured line by line and scrollable, rendering only what is seen.

Like `TranscriptView` it is a Line-API view (a 4 MiB patch costs nothing while it is
not scrolled) whose lines are wrapped to the width, so nothing is cut off at 80
columns. Colours come from the kind `supervisor.difflines.line_kinds` gives each line:
`+` green, `-` red, `@@` cyan, file headers bold, the `✂` marker in the warning colour.
"""

from __future__ import annotations

import re
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from supervisor.difflines import DiffKind, line_kinds
from tui.widgets.transcript import wrap

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]").sub
Row = tuple[str, DiffKind]


class DiffView(ScrollView, can_focus=True):
    """Shows one patch; `show(text)` replaces it."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {f"diff--{kind}" for kind in DiffKind}
    DEFAULT_CSS = """
    DiffView {
        background: $surface;
        overflow-x: hidden;
        overflow-y: scroll;
        scrollbar-size-vertical: 1;
        & > .diff--context { color: $foreground; }
        & > .diff--file { color: $foreground; text-style: bold; }
        & > .diff--hunk { color: ansi_cyan; }
        & > .diff--add { color: ansi_green; }
        & > .diff--del { color: ansi_red; }
        & > .diff--marker { color: $text-warning; text-style: italic; }
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("home", "scroll_home", "Top", show=False),
        Binding("end", "scroll_end", "End", show=False),
        Binding("j", "scroll_down", "down", show=False),
        Binding("k", "scroll_up", "up", show=False),
        Binding("space", "page_down", "page down", show=False),
        Binding("b", "page_up", "page up", show=False),
    ]

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._lines: list[Row] = []
        self._rows: list[Row] = []
        self._width = 0
        self._styles: dict[DiffKind, Style] = {}
        self._strips: LRUCache[tuple[Row, int], Strip] = LRUCache(1024)

    def show(self, text: str) -> None:
        lines = text.removesuffix("\n").split("\n") if text else []
        self._lines = [
            (_CONTROL("�", line.expandtabs(4)), kind) for kind, line in line_kinds(lines)
        ]
        self._rewrap()
        self.scroll_home(animate=False, immediate=True)

    @property
    def row_count(self) -> int:
        return len(self._rows)

    @property
    def lines(self) -> list[Row]:
        return list(self._lines)

    def _rewrap(self) -> None:
        width = self._width
        self._rows = [(part, kind) for text, kind in self._lines for part in wrap(text, width)]
        size = Size(width, len(self._rows))
        if size != self.virtual_size:
            self.set_reactive(DiffView.virtual_size, size)
            self._scroll_update(size)
        self.refresh()

    def on_resize(self) -> None:
        width = max(1, self.scrollable_content_region.width)
        if width != self._width:
            self._width = width
            self._rewrap()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._strips.clear()

    def _style(self, kind: DiffKind) -> Style:
        style = self._styles.get(kind)
        if style is None:
            style = self.rich_style + self.get_component_rich_style(f"diff--{kind}", partial=True)
            self._styles[kind] = style
        return style

    def render_line(self, y: int) -> Strip:
        index = int(self.scroll_y) + y
        row = self._rows[index] if index < len(self._rows) else ("", DiffKind.CONTEXT)
        strip = self._strips.get((row, self._width))
        if strip is None:
            text, kind = row
            strip = Strip([Segment(text, self._style(kind))], cell_len(text))
            strip = strip.crop_extend(0, self._width, self._style(DiffKind.CONTEXT))
            self._strips[(row, self._width)] = strip
        return strip
