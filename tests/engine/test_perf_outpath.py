"""The output path costs O(bytes), not O(lines): one object per pipe read, batched writes.

Untimed: these tests count objects and calls (deltas per read, writes per batch), and
check that the coalesced path says exactly what the per-line path said. Speed is
measured in benchmarks/overhead.py, never here. The one exception is a quadratic
(`Redactor.hold_back` on one long word), which no count can show: its input is sized
so that the quadratic version runs for minutes and the linear one for milliseconds.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import anyio
import pytest
from helpers import agent_turn, command_agent, load, loop, run_recorded, supervisor_table

from supervisor import events as ev
from supervisor.agents import AgentContext, build_agent
from supervisor.agents.base import AgentEvent, AgentRequest, Done, TextDelta, Usage, merge_text
from supervisor.agents.command import CommandAgent
from supervisor.agents.kinds.claude_code import ClaudeCodeAgentSpec
from supervisor.agents.kinds.command import CommandAgentSpec
from supervisor.budget import Ledger
from supervisor.headless import HeadlessPrinter
from supervisor.lines import LineKind
from supervisor.redact import MAX_HOLD, Redactor, StreamRedactor
from supervisor.spec import Limits, LoopSpec
from supervisor.transcript import OutputCap, TranscriptTail
from supervisor.turn_budget import LedgerTurnBudget

LINES = 10_000


async def command_turn(tmp_path: Path, script: str) -> list[AgentEvent]:
    spec = CommandAgentSpec(name="cmd", command=(sys.executable, "-c", script))
    agent = CommandAgent(spec, LoopSpec(name="L", agent="cmd", prompt="p", workspace=tmp_path))
    budget = LedgerTurnBudget(Ledger("L", Limits()))
    request = AgentRequest(
        loop="L", iteration=1, prompt="p", workspace=tmp_path, budget=budget, env={}
    )
    out = await agent_turn(agent, request)
    budget.release()
    return out


@pytest.mark.anyio
async def test_lines_read_in_one_chunk_become_few_deltas_not_one_per_line(
    tmp_path: Path,
) -> None:
    script = (
        "import sys\n"
        f"sys.stdout.write(''.join(f'line {{i}}\\n' for i in range({LINES})))\n"
        "sys.stderr.write('warn\\r\\n' * 3)\n"
    )
    got = await command_turn(tmp_path, script)
    deltas = [e for e in got if isinstance(e, TextDelta)]
    stdout = "".join(e.text for e in deltas if e.stream == "stdout")
    assert stdout == "".join(f"line {i}\n" for i in range(LINES))
    assert "".join(e.text for e in deltas if e.stream == "stderr") == "warn\n" * 3
    # ~69 KB of stdout arrives in a handful of pipe reads: one delta per read.
    assert len(deltas) <= 40, f"{len(deltas)} deltas for {LINES} lines"
    done = got[-1]
    assert isinstance(done, Done)
    assert done.output.endswith(f"line {LINES - 2}\nline {LINES - 1}")


@pytest.mark.anyio
async def test_json_printer_writes_a_batch_of_events_at_once(tmp_path: Path) -> None:
    class CountingStream(io.StringIO):
        writes = 0
        flushes = 0

        def write(self, text: str) -> int:
            self.writes += 1
            return super().write(text)

        def flush(self) -> None:
            self.flushes += 1

    out = CountingStream()
    printer = HeadlessPrinter(json_lines=True, stream=out)
    send, receive = anyio.create_memory_object_stream[ev.Event](2000)
    sent = [
        ev.AgentOutput(loop="L", iteration=1, text=f"chunk {i}\n", stream="stdout")
        for i in range(1000)
    ]
    for event in sent:
        send.send_nowait(event)
    send.close()
    with receive:
        await printer.consume(receive)
    printed = out.getvalue().splitlines()
    assert len(printed) == len(sent)
    assert [line.count(f'"chunk {i}\\n"') for i, line in enumerate(printed)] == [1] * len(sent)
    assert out.writes <= 10, f"{out.writes} writes for {len(sent)} queued events"
    assert out.flushes <= 10


@pytest.mark.timeout(20)
def test_holding_back_a_split_secret_is_linear_in_a_long_word() -> None:
    """One 256 KiB word then a newline (an agent printing a long base64 blob) used to
    cost a regex scan from every position to the word's end: minutes of CPU."""
    redactor = Redactor({"s3cret-value-xyz": "API_KEY"})
    word = "a" * (256 * 1024)
    started = time.process_time()
    assert redactor.hold_back(word + "\n") == len(word) + 1
    assert redactor.hold_back("x " + word) == len(word) + 2 - max(MAX_HOLD, 16)
    assert redactor.hold_back("x yz") == 2
    assert redactor.hold_back("") == 0
    released: list[str] = []
    stream = StreamRedactor(redactor, lambda text, _: released.append(text))
    stream.add(word + "\n" + "s3cret-", "stdout")
    stream.add("value-xyz\n", "stdout")
    stream.flush()
    assert "".join(released) == word + "\n[REDACTED:API_KEY]\n"
    assert time.process_time() - started < 10  # quadratic: minutes; linear: milliseconds


def test_transcript_tail_of_a_huge_chunk_equals_the_tail_of_its_lines() -> None:
    text = "".join(f"[{i}] " + "x" * (i % 7) + "\n" for i in range(LINES)) + "partial"
    whole, by_line = TranscriptTail(), TranscriptTail()
    whole.add(text, "stdout")
    for line in text.splitlines(keepends=True):
        by_line.add(line, "stdout")
    assert whole.snapshot() == by_line.snapshot()
    assert whole.snapshot()[-2:] == (
        (LineKind.OUTPUT, f"[stdout] [{LINES - 1}] " + "x" * ((LINES - 1) % 7)),
        (LineKind.OUTPUT, "partial"),
    )
    long_lines = ("y" * 20_000 + "\n") * 3 + "z" * 9_000
    whole.add(long_lines)
    for line in long_lines.splitlines(keepends=True):
        by_line.add(line)
    assert whole.snapshot() == by_line.snapshot()


def test_output_cap_tail_stays_bounded_when_one_chunk_is_a_whole_pipe_read() -> None:
    """A chunk is now a whole pipe read (up to 64 KiB and more): the held tail must
    still be at most `tail_bytes`, and every byte shown or counted."""
    shown: list[str] = []
    cuts: list[int] = []
    cap = OutputCap(lambda text, _: shown.append(text), cuts.append, limit=10, tail_bytes=100)
    sent = ["head\n", "é" * 1000 + "\n", "a" * 70 + "\n", "b" * 300 + "\n" + "c" * 40 + "\n"]
    for text in sent:
        cap.add(text, "stdout")
    cap.finish()
    total = sum(len(t.encode()) for t in sent)
    assert shown[0] == "head\n"
    tail = "".join(shown[1:])
    assert len(tail.encode()) <= 100
    assert tail.endswith("b" * 50 + "\n" + "c" * 40 + "\n")
    assert sum(len(t.encode()) for t in shown) + cuts[0] == total


def test_output_cap_tail_stays_full_when_a_small_chunk_follows_a_big_one() -> None:
    """A whole pipe read and then the short last read of the agent: the tail keeps the
    end of the big one too, not only the small one (it dropped the big one whole)."""
    shown: list[str] = []
    cuts: list[int] = []
    cap = OutputCap(lambda text, _: shown.append(text), cuts.append, limit=10, tail_bytes=100)
    sent = ["head\n", "a" * 300 + "\n", "b" * 500 + "\n", "c" * 9 + "\n"]
    for text in sent:
        cap.add(text, "stdout")
    cap.finish()
    tail = "".join(shown[1:])
    assert tail == "b" * 89 + "\n" + "c" * 9 + "\n"
    assert sum(len(t) for t in shown) + cuts[0] == sum(map(len, sent))


def test_merge_text_joins_adjacent_deltas_of_a_stream_and_keeps_the_order() -> None:
    usage = Usage(output_tokens=3)
    events: list[AgentEvent] = [
        TextDelta("a\n", stream="raw"),
        TextDelta("b\n", stream="raw"),
        TextDelta("hi"),
        TextDelta(" there"),
        usage,
        TextDelta("c\n", stream="raw"),
    ]
    assert merge_text(events) == [
        TextDelta("a\nb\n", stream="raw"),
        TextDelta("hi there"),
        usage,
        TextDelta("c\n", stream="raw"),
    ]
    assert merge_text([]) == []


@pytest.mark.anyio
async def test_a_secret_across_the_cut_of_an_overlong_line_is_still_redacted(
    tmp_path: Path,
) -> None:
    """A line longer than `max_line` is passed on in pieces at pipe-read boundaries.
    The pieces must not be ended with an invented newline: that split a secret in two
    halves that the redactor no longer recognised, and both halves were journalled."""
    secret = "k3y-0123456789abcd"  # 18 characters: reads of 4 KiB multiples split one
    script = f"import sys; sys.stdout.write({secret!r} * 20_000)"  # one 360 KB line
    config = load(
        tmp_path,
        supervisor_table(),
        command_agent("talker", script, env={"SERVICE_API_KEY": secret}),
        loop("L", "talker", max_iterations=1, done_marker="never printed"),
    )
    rec = await run_recorded(config)
    text = "".join(e.text for e in rec.of(ev.AgentOutput, "L") if e.stream == "stdout")
    assert text.count("[REDACTED:SERVICE_API_KEY]") == 20_000
    assert text.replace("[REDACTED:SERVICE_API_KEY]", "") == "\n"


@pytest.mark.anyio
async def test_a_character_across_the_cut_of_an_overlong_line_stays_whole(
    tmp_path: Path,
) -> None:
    """The pieces of an over-long line are cut at pipe-read boundaries, which fall
    inside a 3-byte character: each piece decoded alone made it two U+FFFD."""
    script = "import sys; sys.stdout.buffer.write('€'.encode() * 100_000)"  # one 300 KB line
    got = await command_turn(tmp_path, script)
    stdout = "".join(e.text for e in got if isinstance(e, TextDelta) and e.stream == "stdout")
    assert "\ufffd" not in stdout
    assert stdout == "€" * 100_000 + "\n"


@pytest.mark.anyio
async def test_claude_code_raw_and_stderr_lines_of_a_read_become_few_deltas(
    tmp_path: Path,
) -> None:
    """Lines that are not stream-json (a CLI's banner, a crash dump) and stderr lines
    reach the turn as one delta per read, not one per line."""
    fake = tmp_path / "claude"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.stdout.write(''.join(f'raw {{i}}\\n' for i in range({LINES})))\n"
        f"sys.stderr.write(''.join(f'err {{i}}\\n' for i in range({LINES})))\n"
    )
    fake.chmod(0o755)
    spec = ClaudeCodeAgentSpec(name="cc", command=str(fake))
    loop_spec = LoopSpec(name="L", agent="cc", prompt="p", workspace=tmp_path)
    agent = build_agent(spec, loop_spec, AgentContext(state_dir=tmp_path / "state"))
    budget = LedgerTurnBudget(Ledger("L", Limits()))
    request = AgentRequest(
        loop="L", iteration=1, prompt="p", workspace=tmp_path, budget=budget, env={}
    )
    got = await agent_turn(agent, request)
    budget.release()
    deltas = [e for e in got if isinstance(e, TextDelta)]
    raw = "".join(e.text for e in deltas if e.stream == "raw")
    assert raw == "".join(f"raw {i}\n" for i in range(LINES))
    stderr = "".join(e.text for e in deltas if e.stream == "stderr")
    assert stderr == "".join(f"err {i}\n" for i in range(LINES))
    assert len(deltas) <= 60, f"{len(deltas)} deltas for {2 * LINES} lines"
