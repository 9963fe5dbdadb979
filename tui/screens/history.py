"""HistoryScreen (`h`): a loop's iterations, each with its prompt and transcript.

From the journal (`supervisor.journal.reader.JournalReader`, read-only, in a thread)
when the state dir has one for this run; otherwise from what the console saw: the
iterations it recorded and the transcript lines it holds, split per iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import anyio
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

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
    """None: ask the journal when the row is shown."""
    transcript: tuple[TranscriptLine, ...] = ()


def _journal_rows(state_dir: Path, loop: str, run_id: str | None) -> list[HistoryRow] | None:
    """The journal's rows (latest attempt per iteration), or None when there is none."""
    try:
        from supervisor.journal.reader import JournalReader
        from supervisor.journal.schema import JOURNAL_NAME, JournalError
    except ImportError:  # pragma: no cover - the journal is optional for the console
        return None
    if not (state_dir / JOURNAL_NAME).exists():
        return None
    try:
        with JournalReader(state_dir) as reader:
            try:
                its = reader.loop_iterations(loop, run_id)
            except JournalError:
                its = reader.loop_iterations(loop, None)
    except JournalError:
        return None
    latest = {row.iteration: row for row in its}
    return [
        HistoryRow(
            r.iteration, r.outcome or "running", r.tokens, r.usd, r.duration_s, r.reason, None
        )
        for r in latest.values()
    ]


def _journal_detail(
    state_dir: Path, loop: str, iteration: int, run_id: str | None
) -> list[TranscriptLine]:
    from supervisor.journal.reader import JournalReader
    from supervisor.journal.schema import JournalError

    with JournalReader(state_dir) as reader:
        try:
            detail = reader.iteration_detail(loop, iteration, run_id)
        except JournalError:
            run_id = None
            detail = reader.iteration_detail(loop, iteration, run_id)
        lines = reader.iteration_lines(loop, iteration, run_id)
    return [*prompt_lines(detail.prompt), TranscriptLine(LineKind.PLAIN, ""), *lines]


def prompt_lines(prompt: str) -> list[TranscriptLine]:
    """The prompt as the detail shows it above the transcript: a `prompt:` heading."""
    return [TranscriptLine(LineKind.PROMPT, text) for text in ("prompt:", *prompt.split("\n"))]


class HistoryScreen(Screen[None]):
    CSS_PATH = "history.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "back"),
        Binding("h", "back", "back", show=False),
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
            ("#", 4), ("outcome", 11), ("tokens", 7), ("USD", 8), ("time", 6), ("reason", 60),
        ):  # fmt: skip
            table.add_column(label, width=width)
        table.focus()
        self._load()

    @work(group="history", exclusive=True)
    async def _load(self) -> None:
        app = lv(self)
        run_id = app.snapshot.run_id if app.snapshot else None
        rows = None
        if app.state_dir is not None:
            rows = await anyio.to_thread.run_sync(_journal_rows, app.state_dir, self.loop, run_id)
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
        app = lv(self)
        if row.prompt is None and app.state_dir is not None:
            run_id = app.snapshot.run_id if app.snapshot else None
            lines = await anyio.to_thread.run_sync(
                _journal_detail, app.state_dir, self.loop, row.iteration, run_id
            )
        else:
            blank = TranscriptLine(LineKind.PLAIN, "")
            lines = [*prompt_lines(row.prompt or ""), blank, *row.transcript]
        self.query_one(TranscriptView).reset(lines)
        self.query_one(TranscriptView).scroll_home(animate=False)

    def action_back(self) -> None:
        self.dismiss(None)
