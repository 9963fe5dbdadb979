"""ConfirmScreen: a small modal question answered with one key (or a button)."""

from __future__ import annotations

from collections.abc import Sequence

from textual import events, on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

Choice = tuple[str, str, str | None]
"""Key, label, the value `dismiss` returns (None: cancel)."""


class ConfirmScreen(ModalScreen[str | None]):
    CSS_PATH = "confirm.tcss"

    def __init__(self, title: str, message: str, choices: Sequence[Choice]) -> None:
        super().__init__()
        self.title_text = title
        self.message = message
        self.choices = list(choices)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.title_text, id="question")
            yield Static(self.message, id="detail")
            with Horizontal(id="buttons"):
                for i, (key, label, value) in enumerate(self.choices):
                    shown = "esc" if key == "escape" else key
                    yield Button(
                        f"{label} [{shown}]",
                        id=f"choice-{i}",
                        variant="error" if value is not None else "default",
                    )

    def on_mount(self) -> None:
        # Focus the cancelling choice: a stray enter never stops anything.
        cancel = next((i for i, c in enumerate(self.choices) if c[2] is None), 0)
        self.query_one(f"#choice-{cancel}", Button).focus()

    def on_key(self, event: events.Key) -> None:
        for key, _, value in self.choices:
            if event.key == key:
                event.stop()
                self.dismiss(value)
                return
        if event.key == "escape":
            event.stop()
            self.dismiss(None)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        index = int((event.button.id or "choice-0").removeprefix("choice-"))
        self.dismiss(self.choices[index][2])
