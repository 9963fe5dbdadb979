"""The kill -9 matrix with the Messages API: a real `loopvisor run --json` child of API
loops against the fake server, SIGKILLed mid stream, before any usage, and the
instant the server bills; after `run --resume` the ledger is exactly the fake
server's own bill, the crash settled as "usage seen" or "charged at the
reservation" and never undercharged (machinery: tests/resume_support.py).
"""

from __future__ import annotations

from pathlib import Path

from fake_anthropic import FakeAnthropic, hang, input_tokens_for, text
from helpers import loop, sim_agent, supervisor_table, table, write_config
from resume_support import (
    RESERVATION_NOTE,
    RESULT_CHECK,
    SEEN_NOTE,
    Event,
    Harness,
    Session,
    assert_contiguous,
    attempts,
    charged,
    journal_events,
    ledger,
    loop_state,
    reserve_rows,
    result,
    settlements,
    usage_tokens,
)

# -- 1b. mid-iteration with the Messages API: the fake server's own bill ---------------
API_LONG = " ".join(f"word{i}" for i in range(80))


def api_config(h: Harness) -> None:
    for name in ("api", "done"):
        (h.tmp_path / name).mkdir()
    write_config(
        h.tmp_path,
        supervisor_table(max_concurrent=2, tokens=200_000),
        # No base_url: the SDK takes ANTHROPIC_BASE_URL from the child's environment.
        table(
            "agents.api", kind="anthropic", model="claude-haiku-4-5", max_tokens=300, timeout="20s"
        ),
        sim_agent("quick", converge_after=1, files={"result.txt": "ok"}),
        loop(
            "api",
            "api",
            workspace="api",
            context="continue",
            done_marker="DONE",
            max_iterations=5,
            prompt="Finish the task, then say DONE. Iteration $iteration.",
        ),
        loop("done", "quick", workspace="done", checks=[RESULT_CHECK], max_iterations=3),
    )


def api_env(server: FakeAnthropic) -> dict[str, str]:
    return {"ANTHROPIC_BASE_URL": server.base_url, "ANTHROPIC_API_KEY": "dummy"}


def api_tokens(state: Path, loop: str = "api") -> tuple[int, int]:
    """(input incl. cache, output) tokens of the usage events the journal holds."""
    events = journal_events(state, "usage", loop)
    inputs = sum(
        e["input_tokens"] + e["cache_creation_tokens"] + e["cache_read_tokens"] for e in events
    )
    return inputs, sum(e["output_tokens"] for e in events)


def assert_api_resumed(h: Harness, done_first: bool, second: Session, summary: Event) -> None:
    """What every API case shares after the resume. `done_first`: the sim loop `done`
    had finished (in the journal) when the supervisor was killed."""
    assert summary["exit_code"] == 0
    api = h.history("api")
    assert_contiguous(api, "api")
    assert attempts(api) == [(1, "continue"), (2, "interrupted"), (2, "continue"), (3, "succeeded")]
    done = h.history("done")
    assert_contiguous(done, "done")
    if done_first:
        assert attempts(done) == [(1, "succeeded")]
        assert second.of("iteration_started", "done") == []
    else:  # only the write-ahead case kills that early
        assert attempts(done)[-1] == (1, "succeeded")
    assert [e["iteration"] for e in second.of("iteration_started", "api")] == [2, 3]
    assert result(summary, "api")["iterations"] == 3
    assert result(summary, "api")["tokens"] == charged(h.state, "api")
    assert summary["tokens"] == charged(h.state)


def test_api_killed_mid_stream_charges_exactly_the_servers_bill(harness: Harness) -> None:
    h = harness
    api_config(h)
    script = [
        text("First look at the problem."),
        text(API_LONG, delay=0.04),
        text("Second try, still working."),
        text("All good now. DONE"),
    ]
    with FakeAnthropic(script) as server:
        first = h.start(env=api_env(server))
        first.wait_for(
            "streamed text of api iteration 2",
            lambda e: (
                e["type"] == "output"
                and e["loop"] == "api"
                and e["iteration"] == 2
                and "word5" in e["text"]
            ),
        )
        # message_start's usage (input + 1 output token) was reported and is committed.
        first.until(
            "the journal to commit iteration 2's usage",
            lambda: (
                any(e["iteration"] == 2 for e in journal_events(h.state, "usage", "api"))
                and len(journal_events(h.state, "usage")) == len(first.of("usage"))
                and loop_state(h.state, "done") == "succeeded"
            ),
        )
        first.kill9()
        assert server.totals.messages == 2
        assert attempts(h.history("api")) == [(1, "continue"), (2, "interrupted")]

        second, summary = h.resume_to_end(env=api_env(server))
        bill = server.totals
        requests = server.message_requests()

    assert_api_resumed(h, True, second, summary)
    # Usage seen before the crash is charged once, the unseen rest of the reservation on
    # top (a real API bills the output streamed before the kill): never below the bill.
    held = int(reserve_rows(h.state, "api", 2)[-1]["tokens"])
    seen = usage_tokens(first.events, "api", 2)
    assert settlements(h.state, "api") == [
        ("charge", held - seen, SEEN_NOTE),
        ("release", 0, SEEN_NOTE),
    ]
    assert any("charged at the reservation" in e["message"] for e in second.of("notice"))
    assert charged(h.state, "api") == bill.tokens + held - seen == result(summary, "api")["tokens"]
    assert charged(h.state, "api") > bill.tokens
    interrupted = h.history("api")[1]
    assert interrupted["tokens"] == held > seen > 0
    # The conversation continued from iteration 1 (the cut reply is not in it), and the
    # re-run sent iteration 2 exactly as the killed attempt had.
    assert len(requests) == 4
    assert requests[2].body["messages"] == requests[1].body["messages"]
    assert requests[2].body["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "First look at the problem."}],
    }
    # One conversation across the crash. (The interrupted attempt's row has no session
    # id: it is only known from the turn's end; resume takes it from the journal events.)
    rows = h.query("SELECT outcome, session_id FROM iterations WHERE loop = 'api' ORDER BY id")
    assert len({s for outcome, s in rows if outcome != "interrupted"}) == 1
    assert rows[0][1] is not None


def test_api_killed_before_any_usage_is_charged_at_the_reservation(harness: Harness) -> None:
    h = harness
    api_config(h)
    script = [
        text("First look at the problem."),
        hang(30.0),
        text("Second try, still working."),
        text("All good now. DONE"),
    ]
    with FakeAnthropic(script) as server:
        first = h.start(env=api_env(server))
        # The request is at the server (which says nothing and bills nothing) and its
        # reservation is in the journal.
        first.until(
            "iteration 2's request to reach the server",
            lambda: (
                len(server.message_requests()) == 2
                and bool(reserve_rows(h.state, "api", 2))
                and loop_state(h.state, "done") == "succeeded"
            ),
        )
        first.kill9()
        (reservation,) = reserve_rows(h.state, "api", 2)
        bill_before = server.totals.tokens
        second, summary = h.resume_to_end(env=api_env(server))
        bill = server.totals

    assert_api_resumed(h, True, second, summary)
    held = int(reservation["tokens"])
    assert held > 300  # the counted input plus max_tokens
    assert settlements(h.state, "api") == [
        ("charge", held, RESERVATION_NOTE),
        ("release", 0, RESERVATION_NOTE),
    ]
    notes = [e["message"] for e in second.of("notice")]
    assert f"api: {held:,} tokens" in " ".join(notes)
    assert any("charged at the reservation" in m for m in notes)
    assert h.history("api")[1]["tokens"] == held
    assert bill.tokens > bill_before  # the resumed iterations were billed too
    assert charged(h.state, "api") == bill.tokens + held == result(summary, "api")["tokens"]


def test_api_killed_the_instant_the_server_bills_is_never_undercharged(
    harness: Harness,
) -> None:
    """Write-ahead: the reservation must be in the journal before the request leaves.

    The kill lands as soon as the server has billed message_start (and then hangs), not
    waiting for the journal: whatever the journal then holds must cover the bill, as
    "usage seen" (exact) or "charged at the reservation" (more), never less.
    """
    h = harness
    api_config(h)
    script = [
        text("First look at the problem."),
        hang(30.0, after_start=True),
        text("Second try, still working."),
        text("All good now. DONE"),
    ]
    with FakeAnthropic(script) as server:
        first = h.start(env=api_env(server))
        first.until("iteration 2's message_start to be billed", lambda: server.totals.messages == 2)
        first.kill9()
        done_first = loop_state(h.state, "done") == "succeeded"
        bill_at_kill = server.totals.tokens
        (started,) = [r for r in server.message_requests() if r.reply == "hang"]
        second, summary = h.resume_to_end(env=api_env(server))
        bill = server.totals

    assert_api_resumed(h, done_first, second, summary)
    assert bill_at_kill > 0
    settled = settlements(h.state, "api")
    assert settled, f"no row covers iteration 2's request: {ledger(h.state, 'api')}"
    held = int(reserve_rows(h.state, "api", 2)[0]["tokens"])
    billed_start = input_tokens_for(started.body)  # message_start (of no text: 0 output)
    if settled[0][2] == SEEN_NOTE:  # the journal had message_start's usage
        assert settled == [("charge", held - billed_start, SEEN_NOTE), ("release", 0, SEEN_NOTE)]
        assert charged(h.state, "api") == bill.tokens - billed_start + held
    else:  # only the reservation: charged whole, more than was billed
        assert settled == [("charge", held, RESERVATION_NOTE), ("release", 0, RESERVATION_NOTE)]
        assert charged(h.state, "api") == bill.tokens - billed_start + held > bill.tokens
    print("write-ahead case:", settled[0][2])
