"""HelpScreen: every key of the console, by screen (from `tui.keys`)."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.keys import help_sections


def keys_table() -> Table:
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=True)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("does", ratio=1)
    for section, rows in help_sections():
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
