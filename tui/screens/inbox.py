"""InboxScreen (`a`): every loop that needs a person, with the evidence and the keys."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from supervisor.api import LoopSnapshot, RunSnapshot
from supervisor.events import END_STATES
from tui import format as fmt
from tui.live import lv

HINT = "enter step in · p {p} · e edit · i inject · r restart · s stop · h history"
"""The keys under each entry; `p` restarts a loop that ended (it cannot resume)."""


def entry(loop: LoopSnapshot) -> Text:
    mark, mark_style = fmt.marker(loop)
    text = Text()
    text.append(f"{mark} ", style=mark_style)
    text.append(loop.name, style="bold")
    text.append(f"  {loop.state}", style=fmt.STATE_STYLE.get(loop.state, ""))
    text.append(
        f"  iteration {loop.iteration}/{loop.max_iterations} · {fmt.tokens(loop.tokens)} tok"
        f" · {fmt.usd(loop.usd)} · {fmt.percent(fmt.share(loop))} of budget",
        style="dim",
    )
    evidence = loop.evidence or loop.reason or "(no reason recorded)"
    text.append(f"\n  {evidence}")
    if loop.reason and loop.evidence and loop.reason not in loop.evidence:
        text.append(f"\n  {loop.reason}", style="dim")
    if loop.last_check:
        text.append(f"\n  last check: {loop.last_check}", style="dim")
    p = "restart" if loop.state in END_STATES else "resume"
    text.append(f"\n  {HINT.format(p=p)}", style="italic dim")
    return text


class InboxScreen(Screen[None]):
    CSS_PATH = "inbox.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "back"),
        Binding("a", "back", "back", show=False),
        Binding("p", "act('toggle_pause')", "resume"),
        Binding("e", "act('edit')", "edit"),
        Binding("i", "act('inject')", "inject"),
        Binding("r", "act('restart')", "restart"),
        Binding("s", "act('ask_stop')", "stop"),
        Binding("h", "act('history')", "history"),
        Binding("j", "move(1)", "down", show=False),
        Binding("k", "move(-1)", "up", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._shown: list[tuple[str, str]] = []

    def compose(self) -> ComposeResult:
        yield Static("Attention inbox", id="heading")
        yield OptionList(id="entries")
        yield Static("Nothing needs you. esc goes back.", id="empty")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.heading = self.query_one("#heading", Static)
        self.empty = self.query_one("#empty", Static)
        self.options = self.query_one(OptionList)
        snapshot = lv(self).snapshot
        if snapshot is not None:
            self.live_snapshot(snapshot)
        self.options.focus()

    def live_snapshot(self, snapshot: RunSnapshot) -> None:
        loops = [loop for loop in snapshot.loops if fmt.needs_person(loop)]
        texts = [(loop.name, entry(loop)) for loop in loops]
        shown = [(name, text.plain) for name, text in texts]
        n = len(loops)
        self.heading.update(
            f"Attention inbox · {n} loop{'s' if n != 1 else ''} need{'s' if n == 1 else ''} you"
        )
        self.empty.display = not loops
        self.options.display = bool(loops)
        if shown == self._shown:
            return
        self._shown = shown
        options = self.options
        current = self.selected
        options.clear_options()
        options.add_options([Option(text, id=name) for name, text in texts])
        names = [name for name, _ in texts]
        if names:
            options.highlighted = names.index(current) if current in names else 0

    def live_tick(self) -> None:
        return None

    @property
    def selected(self) -> str | None:
        options = self.options
        if options.highlighted is None or options.option_count == 0:
            return None
        return options.get_option_at_index(options.highlighted).id

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            lv(self).focus_loop(event.option.id)
            lv(self).step_in(event.option.id)

    def action_act(self, what: str) -> None:
        name = self.selected
        if name is None:
            self.notify("nothing selected", timeout=3)
            return
        lv(self).focus_loop(name)
        getattr(lv(self), what)(name)

    def action_move(self, step: int) -> None:
        """j / k, as in the loops table."""
        if step > 0:
            self.options.action_cursor_down()
        else:
            self.options.action_cursor_up()

    def action_back(self) -> None:
        self.dismiss(None)
