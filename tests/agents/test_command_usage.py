"""`usage = "json-lines"`: a command agent's `{"loopvisor_usage": ...}` stdout lines are
charged as they arrive (a crossing kills its process group), priced from `model` when
they carry no `usd`, and kept out of the transcript; a malformed one is a warning."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import (
    Recorded,
    load,
    loop,
    read_pids,
    run_recorded,
    supervisor_table,
    wait_gone,
)
from runtime_support import workspaces
from usage_support import usage_agent, usage_line

from supervisor import events as ev
from supervisor.agents.base import TextDelta, Usage
from supervisor.agents.usage_lines import UsageLineError, UsageLineFilter, parse_usage_line

pytestmark = pytest.mark.anyio


def outputs(rec: Recorded, stream: str) -> str:
    return "".join(e.text for e in rec.of(ev.AgentOutput) if e.stream == stream)


# -- the protocol, line by line ---------------------------------------------------------


def test_a_usage_line_is_a_delta_of_tokens_and_optional_usd() -> None:
    usage = parse_usage_line(
        usage_line(input_tokens=10, output_tokens=5, cache_read_input_tokens=7, usd=0.25) + "\n"
    )
    assert usage == Usage(input_tokens=10, output_tokens=5, cache_read_tokens=7, usd=0.25)
    assert parse_usage_line(usage_line(input_tokens=1, output_tokens=2)) == Usage(1, 2)
    assert parse_usage_line("hello loopvisor_usage\n") is None
    assert parse_usage_line('{"other": "loopvisor_usage"}\n') is None
    assert parse_usage_line('{"x": 1, "y": "\\"loopvisor_usage\\""}') is None


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"loopvisor_usage": {"input_tokens": 1,', "not valid JSON"),
        (usage_line(input_tokens=1), "missing 'output_tokens'"),
        (usage_line(input_tokens=-1, output_tokens=2), "input_tokens must be a whole number"),
        (usage_line(input_tokens=1.5, output_tokens=2), "input_tokens must be a whole number"),
        (usage_line(input_tokens=True, output_tokens=2), "input_tokens must be a whole number"),
        (usage_line(input_tokens=1, output_tokens=2, usd="1"), "usd must be a number"),
        (usage_line(input_tokens=1, output_tokens=2, usd=-0.1), "usd must be a number"),
        (usage_line(input_tokens=1, output_token=2), "unknown field 'output_token'"),
        ('{"loopvisor_usage": [1, 2]}', "must be an object"),
        ('{"loopvisor_usage": {"input_tokens": 1, "output_tokens": 1}, "x": 1}', "only key"),
    ],
)
def test_a_malformed_usage_line_says_what_is_wrong(line: str, problem: str) -> None:
    with pytest.raises(UsageLineError, match=problem):
        parse_usage_line(line + "\n")


def test_the_filter_keeps_order_and_never_reads_a_piece_of_a_long_line_as_usage() -> None:
    f = UsageLineFilter()
    line = usage_line(input_tokens=3, output_tokens=4)
    assert f.split(f"a\n{line}\nb\n") == [
        TextDelta("a\n", "stdout"),
        Usage(3, 4),
        TextDelta("b\n", "stdout"),
    ]
    [warned] = f.split('{"loopvisor_usage": nope}\n')
    assert isinstance(warned, TextDelta)
    assert warned.stream == "warning"
    assert "malformed usage line, not charged: not valid JSON" in warned.text
    # A piece of an over-long line, then its end: output as printed, never parsed.
    assert f.split("x" * 10) == [TextDelta("x" * 10, "stdout")]
    assert f.split(f"{line}\n") == [TextDelta(f"{line}\n", "stdout")]
    assert f.split(f"{line}\n") == [Usage(3, 4)]


# -- a real subprocess under a real supervisor --------------------------------------------


async def test_a_token_limit_kills_the_agent_the_line_that_crosses_it(tmp_path: Path) -> None:
    workspaces(tmp_path, "w")
    lines = [
        usage_line(input_tokens=400, output_tokens=100),
        "working",
        usage_line(input_tokens=500, output_tokens=100),
    ]
    config = load(
        tmp_path,
        supervisor_table(),
        usage_agent(lines, hang=True),
        loop("L", "metered", workspace="w", done_marker="DONE", budget={"tokens": 1000}),
    )
    rec = await run_recorded(config)
    result = rec.result("L")
    assert result.state == "exhausted"
    assert result.reason.startswith(
        "loop 'L' token budget crossed mid-turn (overshoot 100 tokens); killed"
    ), result.reason
    assert result.tokens == 1100 == rec.supervisor.ledger.tokens_spent  # what it printed
    # Charged line by line (the crossing above is the second line's), published merged
    # (`usage_merge`): both lines' usage in the event the crossing published at once.
    assert [
        (u.input_tokens, u.output_tokens) for u in rec.of(ev.UsageCharged) if u.input_tokens
    ] == [(900, 200)]
    assert wait_gone(read_pids(tmp_path / "w" / "pids.txt")) == []  # the whole group
    assert outputs(rec, "stdout") == "working\n"
    assert "loopvisor_usage" not in "".join(e.text for e in rec.of(ev.AgentOutput))


async def test_a_global_usd_limit_kills_the_agent_and_the_bill_is_what_it_printed(
    tmp_path: Path,
) -> None:
    workspaces(tmp_path, "w")
    lines = [usage_line(input_tokens=10, output_tokens=10, usd=0.3)] * 2
    config = load(
        tmp_path,
        supervisor_table(usd=0.5),
        usage_agent(lines, hang=True),
        loop("L", "metered", workspace="w", done_marker="DONE"),
    )
    rec = await run_recorded(config)
    assert rec.summary is not None
    assert rec.summary.exit_code == 2
    result = rec.result("L")
    assert result.state == "exhausted"
    assert "global USD budget crossed mid-turn (overshoot $0.1000); killed" in result.reason
    assert result.usd == pytest.approx(0.6)
    assert rec.supervisor.ledger.usd_spent == pytest.approx(0.6)
    assert result.tokens == 40
    assert wait_gone(read_pids(tmp_path / "w" / "pids.txt")) == []


async def test_usage_without_usd_is_priced_from_the_model_or_counted_as_tokens(
    tmp_path: Path,
) -> None:
    workspaces(tmp_path, "w")
    lines = [usage_line(input_tokens=1000, output_tokens=200), "DONE"]
    priced = load(
        tmp_path,
        usage_agent(lines, model="claude-haiku-4-5"),  # $1 / $5 per million
        loop("L", "metered", workspace="w", done_marker="DONE"),
    )
    rec = await run_recorded(priced)
    assert rec.result("L").state == "succeeded"
    assert rec.result("L").usd == pytest.approx(0.002)
    assert rec.result("L").tokens == 1200
    unpriced = load(
        tmp_path,
        usage_agent(lines),
        loop("L", "metered", workspace="w", done_marker="DONE"),
    )
    rec = await run_recorded(unpriced)
    assert (rec.result("L").tokens, rec.result("L").usd) == (1200, 0.0)


async def test_a_malformed_usage_line_is_a_transcript_warning_and_not_charged(
    tmp_path: Path,
) -> None:
    workspaces(tmp_path, "w")
    lines = [
        usage_line(input_tokens=-5, output_tokens=1),
        '{"loopvisor_usage": {"input_tokens": 3',
        usage_line(input_tokens=2, output_tokens=3),
        "DONE",
    ]
    config = load(
        tmp_path,
        usage_agent(lines),
        loop("L", "metered", workspace="w", done_marker="DONE"),
    )
    rec = await run_recorded(config)
    assert rec.result("L").state == "succeeded"
    assert rec.result("L").tokens == 5
    warnings = outputs(rec, "warning").splitlines()
    assert len(warnings) == 2
    assert warnings[0].startswith(
        "loopvisor: malformed usage line, not charged: input_tokens must be a whole number"
    )
    assert "not valid JSON" in warnings[1]
    assert outputs(rec, "stdout") == "DONE\n"


async def test_without_the_protocol_a_usage_line_is_plain_output(tmp_path: Path) -> None:
    workspaces(tmp_path, "w")
    line = usage_line(input_tokens=2, output_tokens=3)
    config = load(
        tmp_path,
        usage_agent([line, "DONE"], usage="none"),
        loop("L", "metered", workspace="w", done_marker="DONE"),
    )
    rec = await run_recorded(config)
    assert rec.result("L").tokens == 0
    assert outputs(rec, "stdout") == f"{line}\nDONE\n"
