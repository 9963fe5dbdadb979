"""ConfirmScreen: the one yes/no question of the console, with one convention for all.

Every confirmation (stop a loop, stop all, restart, quit) is this dialog, so a key
means the same thing everywhere:

- `y` confirms, `n` and esc cancel;
- enter presses the focused button, and focus starts on Cancel: a stray enter
  never stops, restarts or quits anything;
- the buttons name their key ("[y] Stop", "[n] Cancel"): short labels that fit at
  80 columns. They are `Content`, not markup: "[y]" parsed as markup was a style
  tag and vanished.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Static

CONFIRM_KEY = "y"
CANCEL_KEYS = ("n", "escape")


class ConfirmScreen(ModalScreen[bool]):
    """Dismisses with True (confirmed) or False (cancelled)."""

    CSS_PATH = "confirm.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(CONFIRM_KEY, "answer(True)", "confirm", show=False),
        *(Binding(key, "answer(False)", "cancel", show=False) for key in CANCEL_KEYS),
    ]

    def __init__(self, title: str, message: str, confirm_label: str) -> None:
        super().__init__()
        self.title_text = title
        self.message = message
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Content(self.title_text), id="question")
            yield Static(Content(self.message), id="detail")
            with Horizontal(id="buttons"):
                yield Button(
                    Content(f"[{CONFIRM_KEY}] {self.confirm_label}"), id="confirm", variant="error"
                )
                yield Button(Content("[n] Cancel"), id="cancel")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def action_answer(self, confirmed: bool) -> None:
        self.dismiss(confirmed)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm")


def confirm(
    app: App[Any], title: str, message: str, label: str, then: Callable[[], object]
) -> None:
    """Ask; call `then()` only if the operator confirmed."""

    def done(confirmed: bool | None) -> None:
        if confirmed:
            then()

    app.push_screen(ConfirmScreen(title, message, label), done)
