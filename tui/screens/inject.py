"""InjectScreen: one operator message added to the loop's next prompt."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from supervisor.api import ControlError
from tui.live import lv


class InjectScreen(ModalScreen[bool]):
    CSS_PATH = "inject.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def __init__(self, loop: str) -> None:
        super().__init__()
        self.loop = loop

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(f"Inject into {self.loop}", id="heading")
            yield Static(
                'Added to the next prompt as "Operator note: …". enter sends, esc cancels.',
                id="hint",
            )
            yield Input(placeholder="e.g. the test fixture is in tests/conftest.py", id="message")
            yield Static("", id="error")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    async def _send(self, event: Input.Submitted) -> None:
        error = self.query_one("#error", Static)
        text = event.value.strip()
        if not text:
            error.update("nothing to inject")
            return
        app = lv(self)
        try:
            await app.handle.inject(self.loop, text)
        except ControlError as exc:
            error.update(str(exc))
            return
        app.notify(f"injected into {self.loop}'s next prompt", timeout=3)
        app.poke()
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)
