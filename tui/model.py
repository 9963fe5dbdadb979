"""What the console keeps between snapshots, in plain Python (no Textual, unit-testable).

- `Transcripts`: every loop's transcript lines, built from events exactly the way
  the core's `TranscriptTail` builds them (so a snapshot's `transcript_tail` seeds
  them seamlessly), plus operator actions. Agent text arrives as coalesced chunks
  (the core emits one `output` event per stream per ~50 ms); views pull what is new
  at their own pace, so a fast stream never costs one widget update per token.
- `BurnWindow`: global spend samples over a sliding window: burn rate per minute and
  projected time to exhaustion.
- `IterationLog`: the iterations the console saw (prompt, outcome, cost): the history
  screen's source when there is no journal.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from supervisor import events as ev
from supervisor.lines import LineSplitter, TranscriptLine, kinded, stream_kind, stream_tag
from supervisor.render import describe
from supervisor.transcript import TAIL_LINE_CHARS

MAX_LINES = 1000
"""Transcript lines kept per loop in the console; older lines come from `transcript()`."""


class LoopLines:
    """One loop's transcript: complete lines, the line being streamed, and counters that
    let a view append only what is new (`total`) or notice a reload (`epoch`).

    Agent text is cut into lines by the core's `LineSplitter`, tagged and kinded by its
    stream exactly as the core's `TranscriptTail` does, so that a snapshot's tail and the
    events after it join up."""

    def __init__(self, max_lines: int = MAX_LINES) -> None:
        self.lines: deque[TranscriptLine] = deque(maxlen=max_lines)
        self._splitter = LineSplitter(TAIL_LINE_CHARS)
        self._kind = stream_kind("assistant")
        self.total = 0
        """Complete lines appended since the last reload."""
        self.epoch = 0
        """Bumped when the lines were replaced (seeded from a snapshot)."""
        self.version = 0
        """Bumped on every change, partial line included."""
        self._starts: dict[int, int] = {}
        """Iteration number -> `total` when its header line came (its latest attempt)."""

    @property
    def partial(self) -> TranscriptLine | None:
        """The line being streamed, if any."""
        text = self._splitter.partial
        return TranscriptLine(self._kind, text) if text else None

    def add(self, text: str, stream: str = "assistant") -> None:
        """Agent text of `stream` (mirrors `TranscriptTail.add`)."""
        self._kind = kind = stream_kind(stream)
        for line in kinded(kind, self._splitter.feed(text, prefix=stream_tag(stream))):
            self._append(line)
        self.version += 1

    def add_line(self, line: TranscriptLine) -> None:
        """A line of the core's own transcript (mirrors `TranscriptTail.add_line`: the
        line being streamed ends there)."""
        if self._splitter.partial:
            self._append(TranscriptLine(self._kind, self._splitter.flush()))
        self._append(line)
        self.version += 1

    def start_iteration(self, iteration: int, header: TranscriptLine) -> None:
        """`add_line(header)`, remembering where the iteration's lines begin."""
        self.add_line(header)
        self._starts[iteration] = self.total - 1

    def note(self, line: TranscriptLine) -> None:
        """A line only the console shows (an operator action, a notice): it goes above
        the line being streamed, which stays one line as in the core's transcript."""
        self._append(line)
        self.version += 1

    def seed(self, lines: Sequence[TranscriptLine], *, streaming: bool = False) -> None:
        """Take a snapshot's tail; with `streaming` its last line is still being
        streamed, and the next events continue it."""
        self.lines.clear()
        complete = lines[:-1] if streaming and lines else lines
        self.lines.extend(complete)
        self._splitter.flush()
        if streaming and lines:
            self._kind, self._splitter.partial = lines[-1]
        self.total = len(self.lines)
        self._starts.clear()
        self.epoch += 1
        self.version += 1

    def _append(self, line: TranscriptLine) -> None:
        self.lines.append(line)
        self.total += 1

    def since(self, total: int) -> list[TranscriptLine] | None:
        """Complete lines added after the first `total`; None if they were pruned away."""
        new = self.total - total
        if new < 0 or new > len(self.lines):
            return None
        if new == 0:
            return []
        return list(self.lines)[-new:]

    def iteration(self, number: int) -> list[TranscriptLine]:
        """The complete lines of iteration `number` (its latest attempt) still held: from
        its header to the next iteration's; [] when the console did not see it start."""
        start = self._starts.get(number)
        if start is None:
            return []
        later = [s for s in self._starts.values() if s > start]
        end = min(later, default=self.total)
        first = self.total - len(self.lines)  # `total` of the oldest line held
        lines = list(self.lines)
        return lines[max(0, start - first) : max(0, end - first)]


class Transcripts:
    """`LoopLines` per loop, fed with every event of the run."""

    def __init__(self, max_lines: int = MAX_LINES) -> None:
        self._max = max_lines
        self.loops: dict[str, LoopLines] = {}

    def get(self, loop: str) -> LoopLines:
        lines = self.loops.get(loop)
        if lines is None:
            lines = self.loops[loop] = LoopLines(self._max)
        return lines

    def seed(
        self,
        loop: str,
        lines: Sequence[TranscriptLine],
        *,
        force: bool = False,
        streaming: bool = False,
    ) -> None:
        """Take a snapshot's tail for a loop the console has no lines for (or on resync)."""
        current = self.get(loop)
        if force or (current.total == 0 and current.partial is None):
            current.seed(lines, streaming=streaming)

    def apply(self, event: ev.Event) -> None:
        if isinstance(event, ev.AgentOutput):
            self.get(event.loop).add(event.text, event.stream)
            return
        if isinstance(event, ev.ControlApplied) and event.op == "chat":
            return  # the chat text itself arrives as an `operator` output line
        line = describe(event)
        if line is None:
            return
        if isinstance(event, ev.ControlApplied | ev.Notice):
            targets = [event.loop] if event.loop else list(self.loops)
            for name in targets:
                self.get(name).note(line)
        elif isinstance(event, ev.BudgetWarning):
            if event.scope in self.loops:
                self.get(event.scope).note(line)
        elif isinstance(event, ev.IterationStarted):
            self.get(event.loop).start_iteration(event.iteration, line)
        elif isinstance(event, ev.LoopEvent):
            self.get(event.loop).add_line(line)


@dataclass(frozen=True, slots=True)
class Burn:
    """Spend per minute over the window, and minutes until each limit is reached."""

    tokens_per_min: float
    usd_per_min: float
    cpu_per_min: float
    window_s: float


class BurnWindow:
    """Samples of the global ledger over the last `window_s` seconds."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int, float, float]] = deque()

    def add(self, now: float, tokens: int, usd: float, cpu_s: float) -> None:
        samples = self._samples
        if samples and now <= samples[-1][0]:
            samples[-1] = (samples[-1][0], tokens, usd, cpu_s)
            return
        samples.append((now, tokens, usd, cpu_s))
        while len(samples) > 2 and samples[1][0] <= now - self.window_s:
            samples.popleft()

    def rate(self) -> Burn | None:
        """None until the window spans at least two seconds."""
        if len(self._samples) < 2:
            return None
        t0, tok0, usd0, cpu0 = self._samples[0]
        t1, tok1, usd1, cpu1 = self._samples[-1]
        span = t1 - t0
        if span < 2.0:
            return None
        per_min = 60.0 / span
        return Burn(
            tokens_per_min=max(0.0, (tok1 - tok0) * per_min),
            usd_per_min=max(0.0, (usd1 - usd0) * per_min),
            cpu_per_min=max(0.0, (cpu1 - cpu0) * per_min),
            window_s=span,
        )


def minutes_left(used: float, limit: float | None, per_min: float) -> float | None:
    """Projected minutes until `limit` at `per_min`; None when unlimited or not burning."""
    if limit is None or per_min <= 0:
        return None
    return max(0.0, limit - used) / per_min


@dataclass(slots=True)
class IterationInfo:
    iteration: int
    prompt: str
    started: float
    outcome: str | None = None
    reason: str = ""
    tokens: int = 0
    usd: float = 0.0
    duration_s: float | None = None
    commit: str | None = None


class IterationLog:
    """The last iterations of each loop as the console saw them (history without a journal)."""

    def __init__(self, per_loop: int = 100) -> None:
        self._per_loop = per_loop
        self.loops: dict[str, deque[IterationInfo]] = {}

    def apply(self, event: ev.Event) -> None:
        if isinstance(event, ev.IterationStarted):
            its = self.loops.setdefault(event.loop, deque(maxlen=self._per_loop))
            its.append(IterationInfo(event.iteration, event.prompt, event.ts))
        elif isinstance(event, ev.IterationFinished):
            for info in reversed(self.loops.get(event.loop, ())):
                if info.iteration == event.iteration and info.outcome is None:
                    info.outcome, info.reason = event.outcome, event.reason
                    info.tokens, info.usd = event.tokens, event.usd
                    info.duration_s = event.duration_s
                    info.commit = event.commit
                    break

    def of(self, loop: str) -> list[IterationInfo]:
        return list(self.loops.get(loop, ()))


def wait_deadline(event: ev.LoopStateChanged) -> float | None:
    """When a `waiting` state with a known delay ends (epoch seconds)."""
    if event.state == "waiting" and event.wait_seconds:
        return event.ts + event.wait_seconds
    return None


def older_lines(
    fetched: Sequence[TranscriptLine], shown: Sequence[TranscriptLine]
) -> list[TranscriptLine]:
    """The lines of `fetched` (a longer transcript) that come before what is `shown`.

    Anchors on the texts of the first shown lines (three, then fewer) so that lines the
    console adds itself (operator actions) or a partial line do not break the match; []
    if unsure."""
    if not shown:
        return list(fetched)
    texts = [line.text for line in fetched]
    for k in (3, 2, 1):
        anchor = [line.text for line in shown[:k]]
        if len(anchor) < k:
            continue
        for i in range(len(texts) - k, -1, -1):
            if texts[i : i + k] == anchor:
                return list(fetched[:i])
    return []
