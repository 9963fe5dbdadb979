"""Usage-limit signals of the real CLI, read from recordings (claude 2.1.332 on an
OAuth login against tests/fake_anthropic.py answering as a Pro/Max window refusal;
made by scripts/record_usage_limit.py)."""

from __future__ import annotations

import json
import time

import pytest
from claude_support import DATA

from supervisor.agents.base import AgentFailed, TextDelta, Usage
from supervisor.agents.stream_json import StreamJsonParser, parse_lines
from supervisor.agents.usage import Tokens
from supervisor.agents.usagelimit import (
    UsageLimit,
    account_key,
    describe,
    from_result,
    reset_label,
)


def lines(name: str) -> list[str]:
    return (DATA / name).read_text().splitlines()


def resets_at(name: str) -> float:
    """The reset epoch the CLI printed in its rejected `rate_limit_event`."""
    for line in lines(name):
        obj = json.loads(line)
        info = obj.get("rate_limit_info") or {}
        if obj["type"] == "rate_limit_event" and info.get("status") == "rejected":
            return float(info["resetsAt"])
    raise AssertionError(f"{name} has no rejected rate_limit_event")


@pytest.mark.parametrize(
    ("name", "window", "text"),
    [
        ("usage_limit_five_hour.jsonl", "five_hour", "You've hit your 5-hour limit"),
        ("usage_limit_weekly.jsonl", "seven_day", "You've hit your weekly limit"),
        ("usage_limit_mid_turn.jsonl", "five_hour", "You've hit your 5-hour limit"),
    ],
)
def test_recorded_usage_limits_end_the_turn_with_the_reset_time(
    name: str, window: str, text: str
) -> None:
    final = parse_lines(lines(name))[-1]
    assert isinstance(final, AgentFailed)
    limit = final.usage_limit
    assert limit is not None
    assert limit.window == window
    assert limit.resets_at == resets_at(name)
    assert limit.message.startswith(text)
    assert " · resets " in limit.message


def test_the_rejected_rate_limit_event_is_kept_and_shown_raw() -> None:
    parser = StreamJsonParser()
    [event_line] = [
        line for line in lines("usage_limit_five_hour.jsonl") if "rate_limit_event" in line
    ]
    [shown] = parser.feed(event_line)
    assert isinstance(shown, TextDelta)
    assert shown.stream == "raw"
    assert parser.usage_limit is not None
    assert parser.usage_limit.resets_at == resets_at("usage_limit_five_hour.jsonl")


def test_an_allowed_rate_limit_event_is_no_limit() -> None:
    parser = StreamJsonParser()
    parser.feed('{"type":"rate_limit_event","rate_limit_info":{"status":"allowed"}}')
    assert parser.usage_limit is None


def test_a_mid_turn_limit_charges_what_was_billed_before_it_once() -> None:
    events = parse_lines(lines("usage_limit_mid_turn.jsonl"))
    result = json.loads(lines("usage_limit_mid_turn.jsonl")[-1])
    billed = Tokens()
    for entry in result["model_usage_since_last_result"].values():
        billed = billed + Tokens.from_model_usage(entry)
    charged = Tokens()
    for u in events:
        if isinstance(u, Usage):
            charged = charged + Tokens(
                u.input_tokens, u.output_tokens, u.cache_creation_tokens, u.cache_read_tokens
            )
    assert charged == billed
    assert charged.total > 0
    usd = sum(u.usd or 0.0 for u in events if isinstance(u, Usage))
    assert usd == pytest.approx(result["total_cost_usd"])


def test_an_api_key_429_is_no_usage_limit() -> None:
    final = parse_lines(lines("api_error_429.jsonl"))[-1]
    assert isinstance(final, AgentFailed)
    assert final.usage_limit is None


def test_the_older_cli_text_with_its_epoch_is_read() -> None:
    limit = from_result({"type": "result", "result": "Claude AI usage limit reached|1796227666"})
    assert limit is not None
    assert limit.resets_at == 1796227666.0
    assert from_result({"type": "result", "result": "all good"}) is None


def test_reset_label_is_local_time_with_a_date_when_far() -> None:
    now = time.time()
    soon = now + 3600
    assert reset_label(soon, now) == "resets " + time.strftime("%H:%M", time.localtime(soon))
    far = now + 3 * 86400
    assert reset_label(far, now) == "resets " + time.strftime("%b %d %H:%M", time.localtime(far))
    assert reset_label(None) == "reset time unknown"
    assert describe(UsageLimit(resets_at=soon), now).startswith("usage limit, resets ")


def test_account_key_hides_the_credentials() -> None:
    key = account_key("claude-code", ["/home/u/.claude", "sk-ant-oat01-secret"])
    assert key.startswith("claude-code:")
    assert "secret" not in key
    assert key == account_key("claude-code", ["/home/u/.claude", "sk-ant-oat01-secret"])
    assert key != account_key("claude-code", ["/home/v/.claude", "sk-ant-oat01-secret"])
