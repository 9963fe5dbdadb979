"""Transcript lines: the one partial-line splitter, the kind every event's line gets in
the core, and kinds across a snapshot's wire form (old clients unaffected)."""

from __future__ import annotations

import dataclasses

from console_support import demo_snapshot
from hypothesis import given
from hypothesis import strategies as st

from supervisor import events as ev
from supervisor.api import LoopSnapshot, RunSnapshot
from supervisor.journal.render import render_transcript, transcript_lines
from supervisor.lines import LineKind, LineSplitter, TranscriptLine, texts
from supervisor.render import describe
from supervisor.transcript import TranscriptTail
from tui.model import Transcripts

K = LineKind


# -- the splitter ------------------------------------------------------------------
def test_the_splitter_keeps_the_unfinished_end_for_the_next_chunk() -> None:
    s = LineSplitter()
    assert s.feed("ab") == []
    assert s.feed("c\nde\n\nf") == ["abc", "de", ""]
    assert s.partial == "f"
    assert s.flush() == "f"
    assert s.partial == ""
    assert s.feed("x\n", prefix="[stderr] ") == ["[stderr] x"]
    assert s.feed("\n", prefix="[stderr] ") == [""]  # an empty line stays empty


def test_the_splitter_cuts_endless_lines_into_bounded_pieces() -> None:
    s = LineSplitter(max_chars=4)
    assert s.feed("abcdefghij\nk") == ["abcd", "efgh", "ij"]
    assert s.feed("lmnopq") == ["klmn"]  # a growing partial gives its whole pieces out
    assert s.partial == "opq"
    unbounded = LineSplitter(max_chars=None)
    assert unbounded.feed("x" * 10_000 + "\n") == ["x" * 10_000]


@given(st.lists(st.text(alphabet="ab\n", max_size=20), max_size=30))
def test_keep_gives_the_same_last_lines_as_splitting_everything(chunks: list[str]) -> None:
    every, kept = LineSplitter(max_chars=3), LineSplitter(max_chars=3)
    all_lines: list[str] = []
    for chunk in chunks:
        all_lines += every.feed(chunk)
        tail = kept.feed(chunk, keep=2)  # what a holder of two lines needs: their pieces
        assert tail == all_lines[len(all_lines) - len(tail) :]
    assert every.partial == kept.partial


# -- kinds are decided in the core --------------------------------------------------
EVENTS: list[tuple[ev.Event, LineKind | None]] = [
    (ev.IterationStarted(loop="a", iteration=2, prompt="p"), K.ITERATION),
    (ev.LoopStateChanged(loop="a", state="waiting", reason="rate limit"), K.STATE),
    (ev.LoopStateChanged(loop="a", state="running"), None),
    (ev.ToolCalled(loop="a", iteration=1, tool_id="t", name="run", input={}), K.TOOL),
    (ev.ToolReturned(loop="a", iteration=1, tool_id="t", output="ok"), K.RESULT),
    (
        ev.ToolReturned(loop="a", iteration=1, tool_id="t", output="no", is_error=True),
        K.RESULT_ERROR,
    ),
    (ev.CheckStarted(loop="a", iteration=1, name="t", command="pytest"), K.CHECK),
    (
        ev.CheckFinished(
            loop="a", iteration=1, name="t", passed=True, exit_code=0, summary="ok",
            output="", duration_s=0.1,
        ),
        K.CHECK_PASS,
    ),
    (
        ev.CheckFinished(
            loop="a", iteration=1, name="t", passed=False, exit_code=1, summary="1 failed",
            output="", duration_s=0.1,
        ),
        K.CHECK_FAIL,
    ),
    (
        ev.IterationFinished(
            loop="a", iteration=1, outcome="continue", reason="r", tokens=1, usd=0, duration_s=1
        ),
        K.ITERATION_END,
    ),
    (ev.OutputTruncated(loop="a", iteration=1, dropped=10, limit=5), K.WARNING),
    (ev.StuckDetected(loop="a", iteration=1, detector="d", evidence="e", action="pause"), K.STUCK),
    (ev.ControlApplied(op="pause", loop="a"), K.OPERATOR),
    (ev.Notice(message="m", level="info"), K.INFO),
    (ev.Notice(message="m", level="warning"), K.WARNING),
    (ev.Notice(message="m", level="error"), K.ERROR),
    (
        ev.BudgetWarning(scope="a", dimension="tokens", used=8, limit=10, message="80% spent"),
        K.WARNING,
    ),
    (ev.UsageCharged(loop="a", iteration=1, input_tokens=3), None),
]  # fmt: skip


def test_every_event_line_gets_its_kind_from_the_renderer() -> None:
    for event, kind in EVENTS:
        line = describe(event)
        assert (line.kind if line else None) == kind, event


def test_agent_text_that_looks_like_a_tool_call_stays_agent_text() -> None:
    """Kinds come from where a line was made, not from its glyphs: the agent writing
    `⚙ ...` or `✘ check ...` is still the agent talking."""
    tail, console = TranscriptTail(), Transcripts()
    text = "⚙ run(ls)\n✘ check unit: exit 1\n[stderr] x\n"
    tail.add(text, "assistant")
    console.apply(ev.AgentOutput(loop="a", iteration=1, text=text))
    expected = [TranscriptLine(K.TEXT, t) for t in text.splitlines()]
    assert list(tail.snapshot()) == expected
    assert list(console.get("a").lines) == expected
    tail.add("oops\n", "stderr")
    assert tail.snapshot()[-1] == (K.STDERR, "[stderr] oops")


def test_a_streamed_partial_line_keeps_its_streams_kind() -> None:
    tail = TranscriptTail()
    tail.add("half a li", "stdout")
    assert tail.snapshot()[-1] == (K.OUTPUT, "half a li")
    tail.add_line(TranscriptLine(K.STATE, "── paused"))
    assert tail.snapshot()[-2:] == ((K.OUTPUT, "half a li"), (K.STATE, "── paused"))


# -- across the wire ------------------------------------------------------------------
def test_snapshot_kinds_travel_beside_the_texts_and_old_readers_see_no_change() -> None:
    snap = demo_snapshot()
    plain = snap.to_dict()
    assert "transcript_kinds" not in plain  # `ctl status --json`, `status --json`
    wire = snap.to_dict(kinds=True)
    for loop in wire["loops"]:
        assert all(isinstance(text, str) for text in loop["transcript_tail"])
        # what a client from before kinds does with a loop: cls(**loop) (no new key)
        fields = {f.name for f in dataclasses.fields(LoopSnapshot)}
        assert set(loop) <= fields
    back = RunSnapshot.from_dict(wire)
    assert back.loops == snap.loops  # texts and kinds
    older = RunSnapshot.from_dict(plain)  # an older server: texts only
    parser = next(loop for loop in older.loops if loop.name == "parser")
    assert {line.kind for line in parser.transcript_tail} == {K.PLAIN}
    assert texts(parser.transcript_tail) == texts(snap.loops[1].transcript_tail)
    wire["transcript_kinds"]["parser"] = ["no-such-kind"] * len(parser.transcript_tail)
    odd = RunSnapshot.from_dict(wire).loops[1]
    assert {line.kind for line in odd.transcript_tail} == {K.PLAIN}


# -- the journal's transcript -----------------------------------------------------------
def test_the_journals_lines_are_its_text_split_with_the_cores_kinds() -> None:
    rows = [
        ev.IterationStarted(loop="a", iteration=1, prompt="p").to_dict(),
        ev.AgentOutput(loop="a", iteration=1, text="hello wo").to_dict(),
        ev.ToolCalled(loop="a", iteration=1, tool_id="t", name="run", input={}).to_dict(),
        ev.AgentOutput(loop="a", iteration=1, text="rld\nwarn\n", stream="stderr").to_dict(),
        ev.CheckFinished(
            loop="a", iteration=1, name="t", passed=False, exit_code=1, summary="1 failed",
            output="E  assert 1 == 2", duration_s=0.1,
        ).to_dict(),
        ev.AgentOutput(loop="a", iteration=1, text="tail").to_dict(),
    ]  # fmt: skip
    lines = transcript_lines(rows, verbose=True)
    assert texts(lines) == render_transcript(rows, verbose=True).split("\n")
    assert [line.kind for line in lines] == [
        K.ITERATION, K.TEXT, K.TOOL, K.STDERR, K.STDERR, K.CHECK_FAIL, K.CHECK, K.TEXT,
    ]  # fmt: skip
