"""HelpScreen: every key of the console, by screen."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Loops (main screen)",
        (
            ("↑ ↓  j k", "move between loops (the transcript follows)"),
            ("p", "pause / resume the loop (ended: offers a restart)"),
            ("s", "stop the loop (asks first)"),
            ("r", "restart the loop from iteration 1 (asks first)"),
            ("e", "edit prompt, max_iterations, budget (from the next iteration)"),
            ("i", "inject a message into the next prompt"),
            ("enter", "step in: chat with its agent, or claude --resume"),
            ("h", "history: iterations, prompts, transcripts"),
            ("/  esc", "filter loops by name or state / clear the filter"),
            ("a", "attention inbox: loops that need you"),
            ("tab", "focus the transcript / back to the table"),
            ("end / home", "transcript: follow new text / go to the top"),
            ("ctrl+p", "command palette: every action, pause/resume/stop all"),
            ("?", "this help"),
            ("q  ctrl+q", "quit (asks first while loops run: they are stopped)"),
            ("q  ctrl+d", "attached (loopvisor attach): detach, the loops keep running"),
        ),
    ),
    (
        "Attention inbox",
        (
            ("enter", "step in"),
            ("↑ ↓  j k", "move between loops"),
            ("p e i r s h", "resume, edit, inject, restart, stop, history"),
            ("esc  a", "back"),
        ),
    ),
    (
        "Step-in chat",
        (("enter", "send to the agent"), ("ctrl+r", "hand back"), ("esc", "leave it paused")),
    ),
    ("Edit", (("ctrl+s", "apply"), ("tab", "next field"), ("esc", "cancel"))),
    ("Any question", (("y", "confirm"), ("n  esc", "cancel"), ("enter", "the focused button"))),
)


def keys_table() -> Table:
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=True)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("does", ratio=1)
    for section, rows in KEYS:
        table.add_row(f"[bold underline]{section}[/]", "")
        for key, does in rows:
            table.add_row(key, does)
        table.add_row("", "")
    return table


class HelpScreen(ModalScreen[None]):
    CSS_PATH = "help.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "close"),
        Binding("question_mark", "close", "close", show=False),
        Binding("q", "close", "close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static("loopvisor keys · esc closes", id="heading")
            yield Static(keys_table(), id="keys")

    def action_close(self) -> None:
        self.dismiss(None)
