"""The console's pure parts (transcript lines, burn rate, edit validation, wrapping)
and its widgets in a bare app: the transcript view's scroll-back, the loop table's
people-first order and cheap updates, the gauges."""

from __future__ import annotations

from typing import Any

import pytest
from console_support import demo_snapshot, loop_snapshot
from hypothesis import given
from hypothesis import strategies as st
from rich.cells import cell_len
from textual.app import App, ComposeResult

from supervisor import events as ev
from supervisor.lines import LineKind, TranscriptLine, texts
from supervisor.spec import Limits
from supervisor.transcript import TranscriptTail
from tui import format as fmt
from tui.model import (
    BurnWindow,
    IterationLog,
    LoopLines,
    Transcripts,
    minutes_left,
    older_lines,
)
from tui.screens.edit import validate_edit
from tui.widgets.gauges import BudgetGauges, GaugeData
from tui.widgets.loop_table import LoopTable
from tui.widgets.transcript import TranscriptView, wrap

chunk = st.text(alphabet="ab \n✔", max_size=12)
step = st.one_of(
    st.tuples(st.just("add"), chunk, st.sampled_from(["assistant", "stderr", "operator"])),
    st.tuples(st.just("line"), st.text(alphabet="xy ", max_size=8), st.just("")),
)


def plain(text: str) -> TranscriptLine:
    return TranscriptLine(LineKind.STATE, text)


@given(st.lists(step, max_size=40))
def test_loop_lines_build_the_same_lines_as_the_core_tail(
    steps: list[tuple[str, str, str]],
) -> None:
    """Seeding from a snapshot's tail and then applying events must join up exactly."""
    mine, core = LoopLines(), TranscriptTail()
    for kind, text, stream in steps:
        if kind == "add":
            mine.add(text, stream)
            core.add(text, stream)
        else:
            mine.add_line(plain(text))
            core.add_line(plain(text))
    shown = (*mine.lines, mine.partial) if mine.partial else tuple(mine.lines)
    assert shown == core.snapshot()  # texts and kinds
    assert mine.total == len(mine.lines)


def test_since_returns_only_new_lines_and_none_when_pruned() -> None:
    lines = LoopLines(max_lines=5)
    for i in range(3):
        lines.add_line(plain(f"l{i}"))
    seen = lines.total
    lines.add("partial", "assistant")
    assert lines.since(seen) == []
    lines.add(" done\n", "assistant")
    assert lines.since(seen) == [TranscriptLine(LineKind.TEXT, "partial done")]
    for i in range(10):
        lines.add_line(plain(f"m{i}"))
    assert lines.since(seen) is None  # pruned away: the view reloads instead
    epoch = lines.epoch
    lines.seed([plain("a"), plain("b")])
    assert lines.epoch == epoch + 1
    assert lines.since(0) == [plain("a"), plain("b")]


def test_transcripts_route_events_to_their_loop_and_global_actions_to_all() -> None:
    ts = Transcripts()
    ts.seed("a", [TranscriptLine(LineKind.PLAIN, "old line")])
    ts.seed("b", [])
    ts.apply(ev.IterationStarted(loop="a", iteration=1, prompt="p"))
    ts.apply(ev.AgentOutput(loop="a", iteration=1, text="hello\nwor"))
    ts.apply(ev.ControlApplied(op="pause", loop=None))
    ts.apply(ev.ControlApplied(op="chat", loop="a", detail="hi"))  # shown as its output
    K = LineKind
    assert [(line.kind, line.text) for line in ts.get("a").lines] == [
        (K.PLAIN, "old line"),
        (K.ITERATION, "━━ iteration 1 ━━"),
        (K.TEXT, "hello"),
        (K.OPERATOR, "» operator pause"),
    ]
    assert ts.get("a").partial == (K.TEXT, "wor")  # the operator's line does not cut it
    assert texts(ts.get("b").lines) == ["» operator pause"]
    ts.seed("a", [plain("other")])  # not forced: the console already has lines for it
    assert "other" not in texts(ts.get("a").lines)


def test_older_lines_anchor_on_the_texts_of_the_first_shown_lines() -> None:
    def lines(*names: str, kind: LineKind = LineKind.TEXT) -> list[TranscriptLine]:
        return [TranscriptLine(kind, name) for name in names]

    fetched = lines("1", "2", "3", "4", "5", "6", kind=LineKind.PLAIN)  # kinds not sent
    assert older_lines(fetched, lines("4", "5", "6", "7")) == fetched[:3]
    assert older_lines(fetched, lines("4", "X")) == fetched[:3]  # a line only the console has
    assert older_lines(fetched, lines("nope")) == []
    assert older_lines(fetched, []) == fetched


def test_an_iterations_lines_run_from_its_start_event_to_the_next() -> None:
    """The history screen (no journal) takes an iteration's lines from where its
    `iteration_started` event put its header, not from the header's text."""
    ts = Transcripts()
    ts.seed("a", [TranscriptLine(LineKind.TEXT, "━━ iteration 9 ━━")])  # agent text, not a header
    ts.apply(ev.IterationStarted(loop="a", iteration=1, prompt="p"))
    ts.apply(ev.AgentOutput(loop="a", iteration=1, text="a\n"))
    ts.apply(ev.IterationStarted(loop="a", iteration=2, prompt="p"))
    ts.apply(ev.AgentOutput(loop="a", iteration=2, text="b\nc\n"))
    lines = ts.get("a")
    assert texts(lines.iteration(1)) == ["━━ iteration 1 ━━", "a"]
    assert texts(lines.iteration(2)) == ["━━ iteration 2 ━━", "b", "c"]
    assert lines.iteration(9) == []
    small = LoopLines(max_lines=3)  # the header is pruned: what is left of the iteration
    small.start_iteration(1, plain("head"))
    small.add("1\n2\n3\n", "assistant")
    assert texts(small.iteration(1)) == ["1", "2", "3"]


def test_iteration_log_pairs_starts_and_ends() -> None:
    log = IterationLog()
    log.apply(ev.IterationStarted(loop="a", iteration=1, prompt="first"))
    log.apply(
        ev.IterationFinished(
            loop="a", iteration=1, outcome="continue", reason="r", tokens=5, usd=0.1, duration_s=2
        )
    )
    log.apply(ev.IterationStarted(loop="a", iteration=2, prompt="second"))
    rows = log.of("a")
    assert [(r.iteration, r.prompt, r.outcome, r.tokens) for r in rows] == [
        (1, "first", "continue", 5),
        (2, "second", None, 0),
    ]


def test_burn_rate_over_a_sliding_window_and_time_to_exhaustion() -> None:
    burn = BurnWindow(window_s=60)
    burn.add(0.0, 0, 0.0, 0.0)
    assert burn.rate() is None
    burn.add(1.0, 100, 0.01, 0.5)
    assert burn.rate() is None  # too short a span to say
    burn.add(30.0, 3_000, 0.3, 15.0)
    rate = burn.rate()
    assert rate is not None
    assert rate.tokens_per_min == pytest.approx(6_000)
    assert rate.usd_per_min == pytest.approx(0.6)
    assert minutes_left(3_000, 60_000, rate.tokens_per_min) == pytest.approx(9.5)
    assert minutes_left(3_000, None, rate.tokens_per_min) is None
    burn.add(200.0, 3_000, 0.3, 15.0)  # old samples leave the window: nothing burns now
    rate = burn.rate()
    assert rate is not None
    assert rate.tokens_per_min == 0


def test_validate_edit_uses_the_cores_rules() -> None:
    problems, values = validate_edit("Fix $loop, try $iteration", "5", "", "0.5", "30m", cpu=9.0)
    assert problems == []
    assert values is not None
    assert values.limits == Limits(tokens=None, usd=0.5, wall=1800.0, cpu=9.0)
    problems, values = validate_edit("Fix $nope", "0", "12x", "-1", "soon", cpu=None)
    assert values is None
    joined = "\n".join(problems)
    for expected in ("$nope", "max_iterations", "budget.tokens", "budget.usd", "budget.wall"):
        assert expected in joined
    assert validate_edit("  ", "3", "", "", "", cpu=None)[0] == ["prompt: must not be empty"]


@given(st.text(alphabet="abc  é世", max_size=120), st.integers(min_value=2, max_value=50))
def test_wrap_never_exceeds_the_width_and_keeps_every_character(text: str, width: int) -> None:
    rows = wrap(text, width)
    assert all(cell_len(r) <= width for r in rows)
    assert "".join(rows).replace(" ", "") == text.replace(" ", "")


def test_compact_formats_fit_their_columns() -> None:
    assert fmt.tokens(999) == "999"
    assert fmt.tokens(12_345) == "12.3k"
    assert fmt.tokens(1_234_567) == "1.23M"
    assert fmt.usd(0.00123) == "$0.0012"
    assert fmt.usd(12.5) == "$12.50"
    assert fmt.seconds(59) == "59s"
    assert fmt.seconds(723) == "12:03"
    assert fmt.seconds(3_725) == "1h02m"
    assert max(len(fmt.seconds(s)) for s in (0, 59, 3_599, 35_999, 10**6)) <= 5


# -- widgets in a bare app -----------------------------------------------------------
class Bare(App[None]):
    def __init__(self, widget: Any) -> None:
        super().__init__()
        self.widget = widget

    def compose(self) -> ComposeResult:
        yield self.widget


@pytest.mark.anyio
async def test_scrolled_back_transcript_stays_put_and_end_follows_again() -> None:
    view = TranscriptView()
    lines = LoopLines()
    for i in range(200):
        lines.add_line(plain(f"line {i}"))
    async with Bare(view).run_test(size=(60, 12)) as pilot:
        view.sync("a", lines)
        await pilot.pause()
        assert view.is_vertical_scroll_end
        view.focus()
        await pilot.press("pageup", "pageup")
        held = view.scroll_y
        assert held < view.max_scroll_y
        for i in range(50):
            lines.add(f"new {i} ", "assistant")
            lines.add("text\n", "assistant")
            view.sync("a", lines)
            await pilot.pause()
        assert view.scroll_y == held  # no jump while text arrives
        assert view.lines[-1].text == "new 49 text"
        await pilot.press("end")
        lines.add_line(plain("after end"))
        view.sync("a", lines)
        await pilot.pause()
        assert view.is_vertical_scroll_end  # follows again
        assert view.lines[-1].text == "after end"


@pytest.mark.anyio
async def test_transcript_rows_are_styled_by_their_lines_kind_not_their_glyphs() -> None:
    view = TranscriptView()
    lines = [
        TranscriptLine(LineKind.TEXT, "⚙ run(ls)"),  # the agent's words that look like a call
        TranscriptLine(LineKind.TOOL, "⚙ run(ls)"),
        TranscriptLine(LineKind.TEXT, "plain words"),
    ]
    async with Bare(view).run_test(size=(40, 6)) as pilot:
        view.reset(lines)
        await pilot.pause()
        styles = [view.render_line(y)._segments[0].style for y in range(3)]
        assert styles[0] == styles[2]
        assert styles[0] != styles[1]


@pytest.mark.anyio
async def test_transcript_shows_the_streamed_line_as_it_grows_and_rewraps_on_resize() -> None:
    view = TranscriptView()
    lines = LoopLines()
    async with Bare(view).run_test(size=(30, 10)) as pilot:
        lines.add("word " * 12, "assistant")
        view.sync("a", lines)
        await pilot.pause()
        assert texts(view.lines) == [("word " * 12)]
        narrow = view.row_count
        assert narrow >= 2
        await pilot.resize_terminal(120, 10)
        await pilot.pause()
        assert view.row_count == 1
        assert not view.sync("a", lines)  # nothing new: no work


@pytest.mark.anyio
async def test_loop_table_puts_people_first_keeps_the_cursor_and_updates_only_changes() -> None:
    table = LoopTable()
    snap = demo_snapshot()
    async with Bare(table).run_test(size=(80, 24)) as pilot:
        table.show(snap.loops, {}, 0.0)
        await pilot.pause()
        assert table.order == ["parser", "greeter", "fizzbuzz", "slugify", "release-notes"]
        table.focus_loop("slugify")
        assert table.show(snap.loops, {}, 0.0) == []  # same data: not one cell touched
        moved = tuple(
            loop_snapshot("fizzbuzz", "running", iteration=4, tokens=2_000)
            if loop.name == "fizzbuzz"
            else loop
            for loop in snap.loops
        )
        calls = table.show(moved, {}, 0.0)
        assert {row for row, _ in calls} == {"fizzbuzz"}
        assert sorted(column for _, column in calls) == ["check", "iter", "share", "tokens"]
        assert table.get_cell("fizzbuzz", "tokens").plain == "2.0k"
        stuck = tuple(
            loop_snapshot("slugify", "stuck", evidence="x") if loop.name == "slugify" else loop
            for loop in moved
        )
        table.show(stuck, {}, 0.0)
        assert table.order[:3] == ["parser", "slugify", "greeter"]
        assert table.focused_loop == "slugify"  # the cursor moved with its loop
        table.query_text = "ing"
        table.show(stuck, {}, 0.0)
        assert table.order == ["fizzbuzz", "release-notes"]  # running, waiting


@pytest.mark.anyio
async def test_gauges_pack_by_width_and_show_the_soonest_exhaustion() -> None:
    gauges = BudgetGauges()
    snap = demo_snapshot()
    burn = BurnWindow()
    burn.add(0.0, 0, 0.0, 0.0)
    burn.add(60.0, 6_000, 0.01, 1.0)
    async with Bare(gauges).run_test(size=(80, 10)) as pilot:
        gauges.update_data(GaugeData(snap.budget, burn.rate(), needs_person=2))
        await pilot.pause()
        text = gauges.render().plain.splitlines()
        assert len(text) == 3
        assert "tokens" in text[0]
        assert "20%" in text[0]
        assert "slots" in text[2]
        assert "6.0k tok/min" in text[2]
        assert "out in" in text[2]
        await pilot.resize_terminal(160, 10)
        await pilot.pause()
        assert len(gauges.render().plain.splitlines()) == 2


@pytest.mark.anyio
async def test_loop_table_rows_render_fresh_after_cursor_moves_and_cell_updates() -> None:
    """The per-row render cache must never show a stale cursor or a stale value."""
    table = LoopTable()
    snap = demo_snapshot()
    async with Bare(table).run_test(size=(80, 12)) as pilot:
        table.show(snap.loops, {}, 0.0)
        await pilot.pause()
        first, second = table.render_line(1), table.render_line(2)  # row 0 has the cursor
        await pilot.press("down")
        assert table.render_line(1) != first  # lost the cursor
        assert table.render_line(2) != second  # got it
        await pilot.press("up")
        assert table.render_line(1) == first
        assert table.render_line(2) == second
        fizz = table.order.index("fizzbuzz") + 1
        assert "1.2k" in table.render_line(fizz).text
        moved = tuple(
            loop_snapshot("fizzbuzz", "running", tokens=45_600) if loop.name == "fizzbuzz" else loop
            for loop in snap.loops
        )
        table.show(moved, {}, 0.0)
        assert "45.6k" in table.render_line(fizz).text


def test_every_screen_stylesheet_rule_is_scoped_to_its_screen() -> None:
    """Screen CSS files join one app-wide stylesheet once the screen is shown, so an
    unscoped `#heading` in one screen would restyle every other screen's heading."""
    from pathlib import Path

    import tui.screens

    folder = Path(tui.screens.__file__).parent
    sheets = sorted(folder.glob("*.tcss"))
    assert sheets
    for sheet in sheets:
        screen = sheet.stem.capitalize() + "Screen"
        for line in sheet.read_text(encoding="utf-8").splitlines():
            if line.rstrip().endswith("{") and not line.startswith((" ", "\t")):
                assert line.startswith(screen), f"{sheet.name}: {line!r} is not scoped"
