"""StatusLine: one line of text that changes often without costing a layout pass.

`Static.update` asks for a full layout (its size may depend on the text); a line
whose size is fixed by CSS only needs a repaint, which keeps the main screen cheap
while the focused loop's state line changes a few times a second.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget


class StatusLine(Widget):
    DEFAULT_CSS = """
    StatusLine {
        height: 1;
        width: 1fr;
    }
    """

    def __init__(self, text: str = "", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.text = text

    def set_text(self, text: str) -> None:
        if text != self.text:
            self.text = text
            self.refresh()

    def render(self) -> Text:
        return Text(self.text, no_wrap=True, overflow="ellipsis", end="")
