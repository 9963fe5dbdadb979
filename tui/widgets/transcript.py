"""TranscriptView: a Line-API log of one loop's transcript, soft-wrapped and coloured.

Like Textual's `Log` (and Toolong's line views) it renders only the visible rows,
so a 1,000-line transcript costs nothing while it is not scrolled. Differences:
lines are wrapped to the width (rewrapped on resize), each line is coloured by the
kind the core gave it (`supervisor.lines.LineKind`: agent text, tool call, tool
result, check, state change, operator, ...), and the line being streamed is shown as
it grows. New text scrolls the view only while it
is at the end: scrolled back, it stays put; `end` follows again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import ClassVar

from rich.cells import cell_len, chop_cells
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from supervisor.lines import LineKind, TranscriptLine
from tui.model import LoopLines

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]").sub
Row = tuple[str, LineKind]
"""One screen row: its text and the kind of the line it belongs to."""
_BLANK: Row = ("", LineKind.PLAIN)


def clean(line: TranscriptLine) -> TranscriptLine:
    return TranscriptLine(line.kind, _CONTROL("�", line.text.expandtabs(4)))


def wrap(text: str, width: int) -> list[str]:
    """Rows of at most `width` cells: break after a space when there is one."""
    if width <= 0:
        return [text]
    if text.isascii():
        if len(text) <= width:
            return [text]
        rows = []
        while len(text) > width:
            cut = text.rfind(" ", 0, width + 1)
            cut = width if cut <= width // 3 else cut + 1
            rows.append(text[:cut].rstrip(" "))
            text = text[cut:]
        if text or not rows:
            rows.append(text)
        return rows
    if cell_len(text) <= width:
        return [text]
    return chop_cells(text, width)


class TranscriptView(ScrollView, can_focus=True):
    """Shows one loop's `LoopLines`; `sync()` appends only what is new."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {f"transcript--{kind}" for kind in LineKind}
    DEFAULT_CSS = """
    TranscriptView {
        background: $surface;
        overflow-x: hidden;
        overflow-y: scroll;
        scrollbar-size-vertical: 1;
        &:focus { background-tint: $foreground 4%; }
        & > .transcript--text { color: $foreground; }
        & > .transcript--plain { color: $foreground; }
        & > .transcript--prompt { color: $foreground; }
        & > .transcript--iteration { color: $text-accent; text-style: bold; }
        & > .transcript--iteration-end { color: $text-muted; }
        & > .transcript--state { color: $text-warning; }
        & > .transcript--tool { color: $text-secondary; }
        & > .transcript--result { color: $text-muted; }
        & > .transcript--result-error { color: $text-error; }
        & > .transcript--check { color: $text-muted; }
        & > .transcript--check-pass { color: $text-success; text-style: bold; }
        & > .transcript--check-fail { color: $text-error; text-style: bold; }
        & > .transcript--stuck { color: $text-error; text-style: bold reverse; }
        & > .transcript--error { color: $text-error; text-style: bold reverse; }
        & > .transcript--operator { color: $text-primary; text-style: bold; }
        & > .transcript--stderr { color: $text-error; text-style: dim; }
        & > .transcript--output { color: $text-muted; }
        & > .transcript--info { color: $text-muted; }
        & > .transcript--warning { color: $text-warning; text-style: italic; }
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("end", "follow", "Follow", show=False),
        Binding("home", "scroll_home", "Top", show=False),
    ]

    class NeedOlder(Message):
        """The view was scrolled to its top: older lines would be welcome."""

        def __init__(self, view: TranscriptView) -> None:
            super().__init__()
            self.view = view

    def __init__(
        self,
        *,
        max_lines: int = 5000,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.max_lines = max_lines
        self.source: str | None = None
        """The loop whose lines are shown."""
        self._lines: list[TranscriptLine] = []
        self._partial: TranscriptLine | None = None
        self._rows: list[Row] = []
        self._partial_rows: list[Row] = []
        self._width = 0
        self._styles: dict[str, Style] = {}
        self._strips: LRUCache[tuple[Row, int], Strip] = LRUCache(2048)
        """Rendered rows by (text, kind) and width: a scroll or a flush re-renders nothing
        that was already on screen."""
        self._synced = (-1, 0, -1)  # (epoch, total, version) of the source shown

    # -- feeding ---------------------------------------------------------------
    def sync(self, loop: str, lines: LoopLines) -> bool:
        """Show `loop`'s lines; cheap when nothing changed. True if the view changed."""
        epoch, total, version = self._synced
        if loop == self.source and lines.epoch == epoch and lines.version == version:
            return False
        new = lines.since(total) if loop == self.source and lines.epoch == epoch else None
        if new is None:
            self.source = loop
            self.reset(lines.lines, lines.partial)
        else:
            self.extend(new, lines.partial)
        self._synced = (lines.epoch, lines.total, lines.version)
        return True

    def reset(self, lines: Iterable[TranscriptLine], partial: TranscriptLine | None = None) -> None:
        self._lines = [clean(line) for line in lines][-self.max_lines :]
        self._partial = clean(partial) if partial else None
        self._rewrap()
        self._update_size(follow=True)

    def extend(
        self, lines: Sequence[TranscriptLine], partial: TranscriptLine | None = None
    ) -> None:
        follow = self.is_vertical_scroll_end
        for line in lines:
            line = clean(line)
            self._lines.append(line)
            self._rows.extend(self._wrap(line))
        self._partial = clean(partial) if partial else None
        self._partial_rows = self._wrap(self._partial) if self._partial else []
        if len(self._lines) > self.max_lines * 1.2:
            before = len(self._rows)
            del self._lines[: len(self._lines) - self.max_lines]
            self._rewrap()
            if not follow:
                self.scroll_to(y=self.scroll_y - (before - len(self._rows)), animate=False)
        self._update_size(follow=follow)

    def prepend(self, lines: Sequence[TranscriptLine]) -> None:
        """Older lines above the first one; the rows in view stay where they are."""
        if not lines:
            return
        older = [clean(line) for line in lines]
        rows = [row for line in older for row in self._wrap(line)]
        self._lines[:0] = older
        self._rows[:0] = rows
        self._update_size(follow=False)
        self.scroll_to(y=self.scroll_y + len(rows), animate=False, immediate=True)

    @property
    def lines(self) -> list[TranscriptLine]:
        """Complete lines shown, then the partial one if any."""
        return [*self._lines, self._partial] if self._partial else list(self._lines)

    @property
    def row_count(self) -> int:
        return len(self._rows) + len(self._partial_rows)

    # -- layout ------------------------------------------------------------------
    def _wrap(self, line: TranscriptLine) -> list[Row]:
        kind = line.kind
        return [(text, kind) for text in wrap(line.text, self._width)]

    def _rewrap(self) -> None:
        self._rows = [row for line in self._lines for row in self._wrap(line)]
        self._partial_rows = self._wrap(self._partial) if self._partial else []

    def _update_size(self, *, follow: bool) -> None:
        # Not `self.virtual_size = ...`: that reactive asks for a layout pass of the whole
        # screen on every flush. The scrollbars are fixed (overflow-y: scroll), so
        # updating them (Widget._scroll_update) and repainting is enough.
        size = Size(self._width, self.row_count)
        if size != self.virtual_size:
            self.set_reactive(TranscriptView.virtual_size, size)
            self._scroll_update(size)
        if follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()

    def on_resize(self) -> None:
        width = max(1, self.scrollable_content_region.width)
        if width != self._width:
            follow = self.is_vertical_scroll_end
            self._width = width
            self._rewrap()
            self._update_size(follow=follow)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._strips.clear()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value <= 0 < old_value:
            self.post_message(self.NeedOlder(self))

    def action_follow(self) -> None:
        self.scroll_end(animate=False, immediate=True, x_axis=False)

    # -- rendering ---------------------------------------------------------------
    def _style(self, kind: LineKind) -> Style:
        style = self._styles.get(kind)
        if style is None:
            style = self.rich_style + self.get_component_rich_style(
                f"transcript--{kind}", partial=True
            )
            self._styles[kind] = style
        return style

    def render_line(self, y: int) -> Strip:
        index = int(self.scroll_y) + y
        n = len(self._rows)
        if index < n:
            row = self._rows[index]
        elif index - n < len(self._partial_rows):
            row = self._partial_rows[index - n]
        else:
            row = _BLANK
        width = self._width
        strip = self._strips.get((row, width))
        if strip is None:
            text, kind = row
            strip = Strip([Segment(text, self._style(kind))], cell_len(text))
            strip = strip.crop_extend(0, width, self._style(LineKind.TEXT))
            self._strips[(row, width)] = strip
        return strip
