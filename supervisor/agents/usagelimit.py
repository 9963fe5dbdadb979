"""A subscription usage limit: the account, not the loop, is out of its window.

Claude Code on a Pro/Max login (checked with claude 2.1.332, recordings in
tests/data/stream_json/usage_limit_*.jsonl) answers a refused request with

- `{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":EPOCH,
  "rateLimitType":"five_hour"|"seven_day",...}}`,
- a synthetic assistant message "You've hit your 5-hour limit · resets 4:07pm (UTC)",
- a result line with `is_error`, `api_error_status: 429`,
  `api_error: "usage_limit_reached"` and `api_error_params.rate_limit_info` (the same
  `resetsAt`), and exits 1. It does not retry by itself.

Older CLIs printed the result text `Claude AI usage limit reached|EPOCH`; that shape
is read too. A limit is no failure of the loop: every loop on the same account waits
until `resets_at` (`supervisor.usagewait`) and then continues.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

LEGACY_TEXT = re.compile(r"Claude AI usage limit reached\|(\d{9,11})")


@dataclass(frozen=True, slots=True)
class UsageLimit:
    """Who is limited and until when."""

    resets_at: float | None
    """Epoch seconds when the window resets (None: the CLI did not say)."""
    window: str | None = None
    """"five_hour", "seven_day", ... as the CLI names it."""
    message: str = ""
    """The CLI's own words ("You've hit your 5-hour limit · resets 4:07pm (UTC)")."""
    account: str = ""
    """The account it applies to (`account_key`), filled in by the agent."""


def from_rate_limit_info(info: Any, message: str = "") -> UsageLimit | None:
    """A `rate_limit_info` object that refuses (status "rejected"), else None."""
    if not isinstance(info, Mapping) or info.get("status") != "rejected":
        return None
    resets = info.get("resetsAt")
    window = info.get("rateLimitType")
    return UsageLimit(
        resets_at=float(resets) if isinstance(resets, int | float) and resets > 0 else None,
        window=window if isinstance(window, str) else None,
        message=message,
    )


def from_result(obj: Mapping[str, Any]) -> UsageLimit | None:
    """The usage limit a `result` line reports, if it reports one."""
    text = obj.get("result") if isinstance(obj.get("result"), str) else ""
    if obj.get("api_error") == "usage_limit_reached":
        params = obj.get("api_error_params")
        info = params.get("rate_limit_info") if isinstance(params, Mapping) else None
        found = from_rate_limit_info(info, str(text))
        return found or UsageLimit(resets_at=None, message=str(text))
    match = LEGACY_TEXT.search(str(text))
    if match:
        return UsageLimit(resets_at=float(match.group(1)), message="Claude AI usage limit reached")
    return None


def account_key(kind: str, parts: Iterable[str]) -> str:
    """A stable name for an account: the kind and a digest of what identifies the login
    (config dir, credentials, endpoint). The digest keeps secrets out of events."""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]
    return f"{kind}:{digest}"


def reset_label(resets_at: float | None, now: float | None = None) -> str:
    """ "resets 20:00" (local time; with the date when it is not within a day)."""
    if resets_at is None:
        return "reset time unknown"
    now = time.time() if now is None else now
    local = time.localtime(resets_at)
    if resets_at - now < 20 * 3600:
        return "resets " + time.strftime("%H:%M", local)
    return "resets " + time.strftime("%b %d %H:%M", local)


def describe(limit: UsageLimit, now: float | None = None) -> str:
    """The reason a waiting loop shows: "usage limit, resets 20:00"."""
    return f"usage limit, {reset_label(limit.resets_at, now)}"
