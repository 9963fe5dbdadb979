"""DiffScreen (`d`): a worktree loop's changes as a coloured, scrollable patch.

From the main screen, the loop's whole diff against its base; from the history
screen, the selected iteration's checkpoint commit against its parent. Through the
handle (`diff()`), so it is the same in a local console and attached over the socket
(where a patch over the socket's bound comes cut, with a marker line saying so).
"""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Static

from supervisor.api import ControlError, LoopDiff
from tui.live import lv
from tui.widgets.diffview import DiffView


def heading(diff: LoopDiff) -> str:
    what = "whole diff" if diff.iteration is None else f"iteration {diff.iteration}"
    parts = [f"Diff of {diff.loop} · {what}"]
    if diff.base and diff.head:
        parts.append(f"{diff.base[:10]}..{diff.head[:10]}")
    if diff.stat:
        parts.append(diff.stat)
    return " · ".join(parts)


class DiffScreen(Screen[None]):
    CSS_PATH = "diff.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "back"),
        Binding("q", "back", "back", show=False),
        Binding("d", "back", "back", show=False),
    ]

    def __init__(self, loop: str, iteration: int | None = None) -> None:
        super().__init__()
        self.loop = loop
        self.iteration = iteration
        self.diff: LoopDiff | None = None

    def compose(self) -> ComposeResult:
        what = "whole diff" if self.iteration is None else f"iteration {self.iteration}"
        yield Static(f"Diff of {self.loop} · {what} · reading…", id="heading", markup=False)
        yield Static("", id="note", markup=False)
        yield DiffView(id="patch")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(DiffView).focus()
        self._load()

    @work(group="diff", exclusive=True)
    async def _load(self) -> None:
        note = self.query_one("#note", Static)
        try:
            diff = await lv(self).handle.diff(self.loop, iteration=self.iteration)
        except ControlError as exc:
            what = "" if self.iteration is None else f" of iteration {self.iteration}"
            self.query_one("#heading", Static).update(f"Diff of {self.loop}{what}")
            note.update(f"no diff: {exc}")
            note.add_class("shown")
            return
        self.diff = diff
        self.query_one("#heading", Static).update(heading(diff))
        note.update(diff.note)
        note.set_class(bool(diff.note), "shown")
        self.query_one(DiffView).show(diff.text)

    def action_back(self) -> None:
        self.dismiss(None)
