"""The transcript tail splits agent text when it is looked at, not per chunk (issue 12).

Untimed: a hypothesis test holds the lazy tail to the eager one (each chunk split as
it came, the tail before the change) over random chunks, streams, over-long lines,
lines of the loop's own and looks in between; a count shows big reads are split in
one go, and the text held meanwhile stays bounded.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor import lines as lines_module
from supervisor.lines import LineKind, LineSplitter, TranscriptLine, kinded, stream_kind, stream_tag
from supervisor.transcript import TAIL_LINE_CHARS, TranscriptTail


class EagerTail:
    """The tail as it was: every chunk split into lines as it comes."""

    def __init__(self, max_lines: int) -> None:
        self.lines: deque[TranscriptLine] = deque(maxlen=max_lines)
        self._splitter = LineSplitter(TAIL_LINE_CHARS)
        self._kind = LineKind.TEXT

    def add(self, text: str, stream: str) -> None:
        self._kind = kind = stream_kind(stream)
        done = self._splitter.feed(text, prefix=stream_tag(stream), keep=self.lines.maxlen)
        self.lines.extend(kinded(kind, done))

    def add_line(self, line: TranscriptLine) -> None:
        if self._splitter.partial:
            self.lines.append(TranscriptLine(self._kind, self._splitter.flush()))
        self.lines.append(line)

    def snapshot(self) -> tuple[TranscriptLine, ...]:
        lines = tuple(self.lines)
        partial = self._splitter.partial
        return (*lines, TranscriptLine(self._kind, partial)) if partial else lines


_pieces = st.sampled_from(["", "a", "bb\n", "\n", "x" * 3000, "y" * 5000 + "\n", "z\nw"])
_chunks = st.lists(_pieces, min_size=1, max_size=6).map("".join)
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("add"), _chunks, st.sampled_from(["assistant", "stdout", "stderr"])),
        st.tuples(st.just("line"), st.just("── state"), st.just("")),
        st.tuples(st.just("look"), st.just(""), st.just("")),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(steps=_steps, max_lines=st.sampled_from([1, 3, 400]))
def test_the_lazy_tail_shows_what_the_eager_tail_shows(
    steps: list[tuple[str, str, str]], max_lines: int
) -> None:
    lazy, eager = TranscriptTail(max_lines), EagerTail(max_lines)
    for what, text, stream in steps:
        if what == "add":
            lazy.add(text, stream)
            eager.add(text, stream)
        elif what == "line":
            lazy.add_line(TranscriptLine(LineKind.STATE, text))
            eager.add_line(TranscriptLine(LineKind.STATE, text))
        else:
            assert lazy.snapshot() == eager.snapshot()
            assert lazy.streaming == bool(eager.snapshot() and eager._splitter.partial)
    assert lazy.snapshot() == eager.snapshot()
    assert list(lazy.lines) == list(eager.lines)


def test_whole_reads_are_split_in_one_go_and_what_waits_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feeds: list[int] = []
    real_feed = lines_module.LineSplitter.feed

    def counting_feed(self: LineSplitter, text: str, **kw: Any) -> list[str]:
        feeds.append(len(text))
        return real_feed(self, text, **kw)

    monkeypatch.setattr(lines_module.LineSplitter, "feed", counting_feed)
    tail = TranscriptTail()
    read = "the agent says something moderately long about the code 0123456789\n" * 960
    for _ in range(64):  # 64 pipe reads of ~64 KiB: ~4 MiB
        tail.add(read, "stdout")
        assert tail._pending_chars <= TranscriptTail.PENDING_CHARS
    assert len(feeds) <= 64 * len(read) // TranscriptTail.PENDING_CHARS + 1
    assert tail.snapshot()[-1] == (LineKind.OUTPUT, "[stdout] " + read.splitlines()[-1])
    assert len(tail.snapshot()) == 400
