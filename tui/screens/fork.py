"""ForkScreen (`f` on the history screen): name a new loop forked from an iteration.

The console's one dialog convention, with a name to type: the question and what
will happen, the name field (filled with the default `LOOP-forkN`), enter forks and
esc cancels (`y`/`n` would be typed into the name). A refusal (a name taken, an
iteration without a commit to start from) is shown in the dialog, which stays open.
Dismissed with the new loop's name, or None when cancelled.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from supervisor.api import ControlError
from tui.live import lv


class ForkScreen(ModalScreen[str | None]):
    CSS_PATH = "fork.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def __init__(self, loop: str, iteration: int) -> None:
        super().__init__()
        self.loop = loop
        self.iteration = iteration

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(
                Content(f"Fork {self.loop} from iteration {self.iteration}?"), id="heading"
            )
            yield Static(
                Content(
                    "A new loop starts from that iteration's commit and conversation, with its"
                    " own budget; the parent is untouched. enter forks, esc cancels."
                ),
                id="hint",
            )
            yield Input(value=f"{self.loop}-fork{self.iteration}", id="name")
            yield Static("", id="error")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    async def _fork(self, event: Input.Submitted) -> None:
        error = self.query_one("#error", Static)
        name = event.value.strip()
        if not name:
            error.update("the new loop needs a name")
            return
        app = lv(self)
        try:
            message = await app.handle.fork(self.loop, iteration=self.iteration, name=name)
        except ControlError as exc:
            error.update(Content(str(exc)))
            return
        app.notify(message, title=f"fork {self.loop}", timeout=5)
        self.dismiss(name)

    def action_cancel(self) -> None:
        self.dismiss(None)
