"""The transcript tail splits output into lines only when they are looked at, and the
coalescer's timer sleeps only while it holds text (issue 12).

`TranscriptTail.add` used to split and tag each chunk as it came; a child's 64 KiB
pipe read of ~1,000 lines replaced the whole tail each time, so all but the last
chunk's work was thrown away. Now chunks queue and are split on a look (or when
enough queued), the newest alone when it fills the tail. These tests check that the
lines are exactly what adding each chunk at once gave (a reference copy of that
algorithm), and count the splits (untimed).
"""

from __future__ import annotations

import time
from collections import deque

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor import transcript
from supervisor.transcript import TAIL_LINE_CHARS, TranscriptTail, line_pieces


class EagerTail:
    """The tail as it was: every chunk split and tagged as it is added."""

    def __init__(self, max_lines: int) -> None:
        self.lines: deque[str] = deque(maxlen=max_lines)
        self.partial = ""

    def add(self, text: str, stream: str) -> None:
        tag = "" if stream == "assistant" else f"[{stream}] "
        keep = self.lines.maxlen
        assert keep is not None
        *complete, self.partial = (self.partial + text).rsplit("\n", keep + 1)
        del complete[:-keep]
        for line in complete:
            self.lines.extend(line_pieces(tag + line if tag and line else line))
        if len(self.partial) > TAIL_LINE_CHARS:
            *whole, self.partial = line_pieces(self.partial)
            self.lines.extend(whole)

    def add_line(self, line: str) -> None:
        if self.partial:
            self.lines.append(self.partial)
            self.partial = ""
        self.lines.append(line)

    def snapshot(self) -> tuple[str, ...]:
        return (*self.lines, self.partial) if self.partial else tuple(self.lines)


LINE = st.text(alphabet="ab ", max_size=6)
CHUNK = st.lists(LINE, max_size=9).map("\n".join) | st.sampled_from(["\n", "\n\n", "x" * 9000])
STEP = st.tuples(
    st.sampled_from(["add", "add", "add", "line", "look"]),
    CHUNK,
    st.sampled_from(["assistant", "stdout", "stderr"]),
)


@settings(max_examples=300)
@given(steps=st.lists(STEP, max_size=30), keep=st.integers(1, 5), pending=st.integers(1, 4))
def test_lazy_lines_are_the_eager_lines(
    steps: list[tuple[str, str, str]], keep: int, pending: int
) -> None:
    lazy, eager = TranscriptTail(keep), EagerTail(keep)
    lazy.PENDING_CHUNKS = pending  # (an instance attribute: settles often, or seldom)
    for kind, text, stream in steps:
        if kind == "add":
            lazy.add(text, stream)
            eager.add(text, stream)
        elif kind == "line":
            lazy.add_line(text)
            eager.add_line(text)
        else:
            assert lazy.snapshot() == eager.snapshot()
            assert lazy.streaming == bool(eager.partial)
    assert lazy.snapshot() == eager.snapshot()
    assert tuple(lazy.lines) == tuple(eager.lines)


def test_a_stream_of_big_chunks_is_split_once_per_settle() -> None:
    """Twenty 64 KiB reads of ~900 lines: split when enough queued and when looked at,
    the newest chunk alone each time (it fills the tail), not twenty times."""
    chunk = "the agent says something moderately long about it 0123456789\n" * 1000
    splits: list[int] = []
    tail = TranscriptTail()
    real_put = tail._put

    def put(parts: list[str], stream: str) -> None:
        splits.append(len(parts))
        real_put(parts, stream)

    tail._put = put  # type: ignore[method-assign]
    for _ in range(20):
        tail.add(chunk, "stdout")
    assert tail.snapshot()[-1] == "[stdout] " + chunk.splitlines()[-1]
    assert len(tail.lines) == transcript.TAIL_LINES
    assert len(splits) <= 20 * len(chunk) // TranscriptTail.PENDING_CHARS + 1


@pytest.mark.anyio
async def test_the_coalescer_sleeps_only_while_it_holds_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whole pipe reads are flushed as they come: the flusher has nothing to wait
    for (it woke 20 times a second per turn); a held delta still goes within the
    interval."""
    emitted: list[str] = []
    eleven = anyio.Event()

    def emit(text: str, _stream: str) -> None:
        emitted.append(text)
        if len(emitted) == 11:
            eleven.set()

    coalescer = transcript.OutputCoalescer(emit, clock=time.monotonic, interval=0.01)
    sleeps: list[float] = []
    real_sleep = anyio.sleep

    async def counted(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(delay)

    monkeypatch.setattr(transcript.anyio, "sleep", counted)
    async with anyio.create_task_group() as tg:
        tg.start_soon(coalescer.run_flusher)
        for i in range(10):
            coalescer.add(f"{i}" * transcript.MAX_CHUNK, "stdout")
            await anyio.lowlevel.checkpoint()
        assert len(emitted) == 10
        assert sleeps == []
        coalescer.add("a token", "assistant")
        with anyio.fail_after(10):
            await eleven.wait()
        assert emitted[-1] == "a token"
        assert sleeps[:1] == [0.01]  # (then one quiet interval, and it waits again)
        assert len(sleeps) <= 2
        tg.cancel_scope.cancel()
