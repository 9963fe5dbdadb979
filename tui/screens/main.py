"""The main screen: gauges, the loops table, the focused loop's live transcript, keys."""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input

from supervisor.api import LoopSnapshot, RunSnapshot
from tui import format as fmt
from tui.keys import MAIN_BINDINGS
from tui.live import lv
from tui.model import older_lines
from tui.widgets.gauges import BudgetGauges, GaugeData
from tui.widgets.loop_table import LoopTable
from tui.widgets.score import ScoreLine
from tui.widgets.status import StatusLine
from tui.widgets.transcript import TranscriptView


def loop_title(loop: LoopSnapshot) -> str:
    parts = [loop.name, f"{loop.agent} ({loop.agent_kind})", loop.state]
    if loop.forked_from:
        parts[0] += f" (forked from {loop.forked_from})"
    if loop.reason:
        parts[-1] += f": {loop.reason}"
    # Evidence explains why a person is needed; once the loop moved on (resumed,
    # succeeded) the core keeps it, but showing it would describe a stall that is over.
    if loop.evidence and fmt.needs_person(loop) and loop.evidence not in loop.reason:
        parts.append(f"evidence: {loop.evidence}")
    return " · ".join(parts)


class MainScreen(Screen[None]):
    CSS_PATH = "main.tcss"
    BINDINGS: ClassVar[list[BindingType]] = list(MAIN_BINDINGS)  # tui/keys.py

    def compose(self) -> ComposeResult:
        yield BudgetGauges(id="gauges")
        yield LoopTable(id="loops")
        yield Input(placeholder="filter: name or state (enter keeps, esc clears)", id="filter")
        yield StatusLine(id="loop-title")
        yield ScoreLine(id="scores")
        yield TranscriptView(id="transcript")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.table = self.query_one(LoopTable)
        self.transcript = self.query_one(TranscriptView)
        self.gauges = self.query_one(BudgetGauges)
        self.title_bar = self.query_one("#loop-title", StatusLine)
        self.scores = self.query_one(ScoreLine)
        """Held, like the others: a tick can come while the screen's children are being
        removed (a dialog pushed, the app ending), when a query finds nothing."""
        self.table.on_cursor = self._row_changed
        self.table.focus()

    # -- live data ----------------------------------------------------------------
    @property
    def focused_loop(self) -> str | None:
        return self.table.focused_loop if self.is_mounted else None

    def focus_loop(self, name: str) -> None:
        if not self.table.focus_loop(name):
            self.table.query_text = ""
            self.query_one("#filter", Input).value = ""
            self._refresh_table()
            self.table.focus_loop(name)

    def live_snapshot(self, snapshot: RunSnapshot) -> None:
        app = lv(self)
        with app.batch_update():
            self.table.show(snapshot.loops, app.wait_deadlines, app.clock())
            summary = app.summary if app.run_done else None
            finished = fmt.run_over(snapshot, summary)
            self.gauges.update_data(
                GaugeData(
                    budget=snapshot.budget,
                    burn=app.burn.rate(),
                    needs_person=sum(fmt.needs_person(loop) for loop in snapshot.loops),
                    finished=finished,
                    disconnected=app.disconnected,
                )
            )
            self._show_focused(sync_transcript=False)

    def on_resize(self) -> None:
        self._refresh_table()  # column widths follow the terminal now, not at the next poll

    def live_tick(self) -> None:
        self._show_focused(sync_transcript=True)

    def _refresh_table(self) -> None:
        app = lv(self)
        if app.snapshot is not None:
            with app.batch_update():
                self.table.show(app.snapshot.loops, app.wait_deadlines, app.clock())

    def _show_focused(self, *, sync_transcript: bool) -> None:
        app = lv(self)
        name = self.focused_loop
        title = self.title_bar
        loop = app.loop(name) if name else None
        title.set_text(loop_title(loop) if loop else "no loop selected")
        title.set_class(loop is not None and fmt.needs_person(loop), "attention")
        self.scores.show_loop(loop)
        if name is not None and (sync_transcript or self.transcript.source != name):
            self.transcript.sync(name, app.transcripts.get(name))

    @on(DataTable.RowHighlighted)
    def _row_changed(self) -> None:
        self._show_focused(sync_transcript=True)

    @on(DataTable.RowSelected)
    def _row_selected(self) -> None:
        self.action_loop("step_in")

    @on(TranscriptView.NeedOlder)
    def _need_older(self, message: TranscriptView.NeedOlder) -> None:
        if message.view.source is not None:
            self._load_older(message.view.source)

    @work(group="older", exclusive=True)
    async def _load_older(self, name: str) -> None:
        view = self.transcript
        shown = view.lines
        fetched = await lv(self).handle.transcript(name, limit=len(shown) + 500)
        if view.source == name:
            view.prepend(older_lines(fetched, view.lines))

    # -- filter -----------------------------------------------------------------
    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("shown")
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.table.query_text = event.value
        self._refresh_table()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        box = self.query_one("#filter", Input)
        if not box.value:
            box.remove_class("shown")
        self.table.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.remove_class("shown")
        self.table.query_text = ""
        self._refresh_table()
        self.table.focus()

    # -- actions on the focused loop ----------------------------------------------
    def _with_loop(self) -> str | None:
        name = self.focused_loop
        if name is None:
            self.notify("no loop selected", severity="warning", timeout=3)
        return name

    def action_loop(self, action: str) -> None:
        """A key bound to a command on the focused loop (`tui.keys`): the app's
        `OperatorActions` method of that name, with the loop."""
        if name := self._with_loop():
            getattr(lv(self), action)(name)

    def action_run(self, action: str) -> None:
        """A key bound to a command of the whole console (inbox, help, quit)."""
        getattr(lv(self), action)()
