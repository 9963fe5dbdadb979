"""HistoryScreen (`h`): a loop's iterations, each with its prompt and transcript.

Through the handle (`iterations()`, `iteration()`), which reads the run's journal,
so it works the same in a local console and attached over the socket; when the run
keeps no journal, from what the console saw: the iterations it recorded and the
transcript lines it holds, split per iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from supervisor.api import ControlError
from supervisor.lines import LineKind, TranscriptLine
from tui import format as fmt
from tui.live import lv
from tui.widgets.transcript import TranscriptView


@dataclass(frozen=True, slots=True)
class HistoryRow:
    iteration: int
    outcome: str
    tokens: int
    usd: float
    duration_s: float | None
    reason: str
    prompt: str | None
    """None: ask the handle when the row is shown."""
    transcript: tuple[TranscriptLine, ...] = ()
    commit: str | None = None


def prompt_lines(prompt: str) -> list[TranscriptLine]:
    """The prompt as the detail shows it above the transcript: a `prompt:` heading."""
    return [TranscriptLine(LineKind.PROMPT, text) for text in ("prompt:", *prompt.split("\n"))]


class HistoryScreen(Screen[None]):
    CSS_PATH = "history.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "back"),
        Binding("h", "back", "back", show=False),
        Binding("d", "diff", "diff"),
        Binding("f", "fork", "fork"),
    ]

    def __init__(self, loop: str) -> None:
        super().__init__()
        self.loop = loop
        self.rows: list[HistoryRow] = []
        self.source = ""

    def compose(self) -> ComposeResult:
        yield Static(f"History of {self.loop}", id="heading")
        yield DataTable(id="iterations", cursor_type="row")
        yield TranscriptView(id="detail")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label, width in (
            ("#", 4), ("outcome", 11), ("tokens", 7), ("USD", 8), ("time", 6), ("commit", 8),
            ("reason", 60),
        ):  # fmt: skip
            table.add_column(label, width=width)
        table.focus()
        self._load()

    @work(group="history", exclusive=True)
    async def _load(self) -> None:
        app = lv(self)
        try:
            attempts = await app.handle.iterations(self.loop)
        except ControlError:  # no journal (or none readable): what this console saw
            attempts = []
        latest = {a.iteration: a for a in attempts}  # the last attempt of each number
        rows = [
            HistoryRow(
                a.iteration,
                a.outcome or "running",
                a.tokens,
                a.usd,
                a.duration_s,
                a.reason,
                None,
                commit=a.commit,
            )
            for a in latest.values()
        ]
        if rows:
            self.source = "journal"
        else:
            self.source = "this session (no journal)"
            seen = app.transcripts.get(self.loop)
            rows = [
                HistoryRow(
                    i.iteration,
                    i.outcome or "running",
                    i.tokens,
                    i.usd,
                    i.duration_s,
                    i.reason,
                    i.prompt,
                    tuple(seen.iteration(i.iteration)),
                    commit=i.commit,
                )
                for i in app.iterations.of(self.loop)
            ]
        self.rows = rows
        n = len(rows)
        self.query_one("#heading", Static).update(
            f"History of {self.loop} · {n} iteration{'s' if n != 1 else ''} · from {self.source}"
        )
        table = self.query_one(DataTable)
        table.clear()
        for index, row in enumerate(rows):
            table.add_row(
                str(row.iteration),
                row.outcome,
                fmt.tokens(row.tokens),
                fmt.usd(row.usd),
                "—" if row.duration_s is None else fmt.seconds(row.duration_s),
                row.commit[:8] if row.commit else "—",
                fmt.clip(row.reason, 60),
                key=str(index),
            )
        if rows:
            table.move_cursor(row=len(rows) - 1)
            self._show(len(rows) - 1)
        else:
            self.query_one(TranscriptView).reset(
                [TranscriptLine(LineKind.PLAIN, "no iterations yet")]
            )

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self._show(int(event.row_key.value))

    @work(group="detail", exclusive=True)
    async def _show(self, index: int) -> None:
        if not 0 <= index < len(self.rows):
            return
        row = self.rows[index]
        if row.prompt is None:
            try:
                detail = await lv(self).handle.iteration(self.loop, row.iteration)
            except ControlError as exc:
                lines = [
                    TranscriptLine(
                        LineKind.WARNING, f"cannot read iteration {row.iteration}: {exc}"
                    )
                ]
            else:
                body = [TranscriptLine(LineKind.PLAIN, t) for t in detail.transcript.split("\n")]
                lines = [*prompt_lines(detail.prompt), TranscriptLine(LineKind.PLAIN, ""), *body]
        else:
            blank = TranscriptLine(LineKind.PLAIN, "")
            lines = [*prompt_lines(row.prompt or ""), blank, *row.transcript]
        self.query_one(TranscriptView).reset(lines)
        self.query_one(TranscriptView).scroll_home(animate=False)

    def _selected(self) -> HistoryRow | None:
        table = self.query_one(DataTable)
        if not self.rows or not 0 <= table.cursor_row < len(self.rows):
            self.notify("no iteration selected", severity="warning", timeout=3)
            return None
        return self.rows[table.cursor_row]

    def action_diff(self) -> None:
        """`d`: the selected iteration's checkpoint commit against its parent."""
        if (row := self._selected()) is not None:
            lv(self).diff(self.loop, row.iteration)

    def action_fork(self) -> None:
        """`f`: a new loop from the selected iteration (`OperatorActions.fork` asks)."""
        if (row := self._selected()) is not None:
            lv(self).fork(self.loop, row.iteration)

    def action_back(self) -> None:
        self.dismiss(None)
