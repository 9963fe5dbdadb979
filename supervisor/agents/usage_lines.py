"""`usage = "json-lines"`: the usage protocol any CLI agent can speak on stdout.

A `command` agent that sets `usage = "json-lines"` may print, on a line of its own,

    {"loopvisor_usage": {"input_tokens": 1200, "output_tokens": 350,
                         "cache_read_input_tokens": 800, "usd": 0.0061}}

Each such line is a *delta* (what was spent since the previous one, never a running
total): the turn charges it the moment it is read, exactly as it charges Claude Code's
per-message usage, so a token or USD limit crossed by it kills the agent's process
group mid-turn. `input_tokens` and `output_tokens` are required counts;
`cache_read_input_tokens`, `cache_creation_input_tokens` and `usd` are optional.
Without `usd` the tokens are priced from the agent's `model` in the price table
(`[pricing]` overrides); with no `model` they are counted as tokens only.

Usage lines are taken out of the output: they reach neither the transcript, the
journal nor `$last_output`. A line that names `loopvisor_usage` but is not a valid
usage object is not charged and becomes a warning line in the transcript, so that a
broken meter is seen instead of silently spending nothing.

Why a parser of its own and not the Messages API's `Tokens.from_api`: that one reads
whatever a provider sends and treats junk as zero; here the agent's author asked to
be metered, so junk is their bug, and it is reported.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from supervisor.agents.base import AgentEvent, TextDelta, Usage

KEY = "loopvisor_usage"
_MARK = f'"{KEY}"'
_COUNTS = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cache_read_input_tokens": "cache_read_tokens",
    "cache_creation_input_tokens": "cache_creation_tokens",
}
_REQUIRED = ("input_tokens", "output_tokens")
_FIELDS = frozenset(_COUNTS) | {"usd"}
_LINES = re.compile(r"[^\n]*\n|[^\n]+")
"""Lines with their newline (`str.splitlines` would also split at \\r, \\f, U+2028...)."""
SHOWN = 200
"""Characters of a malformed line quoted in its warning."""


class UsageLineError(ValueError):
    """A line that names `loopvisor_usage` but is not a valid usage object."""


def parse_usage_line(line: str) -> Usage | None:
    """The usage a stdout line reports; None for an ordinary line. Raises
    `UsageLineError` (with what is wrong) for a usage line that cannot be charged."""
    stripped = line.strip()
    if not stripped.startswith("{") or _MARK not in stripped:
        return None
    try:
        obj = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise UsageLineError(f"not valid JSON ({exc.msg})") from None
    except ValueError as exc:  # a number too long to convert
        raise UsageLineError(f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict) or KEY not in obj:
        return None  # an ordinary JSON line that merely mentions the key
    if len(obj) != 1:
        raise UsageLineError(f"{KEY} must be the line's only key")
    return _usage(obj[KEY])


def _usage(body: Any) -> Usage:
    if not isinstance(body, dict):
        raise UsageLineError(f"{KEY} must be an object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise UsageLineError(
            f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(_FIELDS))})"
        )
    missing = [name for name in _REQUIRED if name not in body]
    if missing:
        raise UsageLineError(f"missing {missing[0]!r}")
    counts: dict[str, int] = {}
    for name, field in _COUNTS.items():
        value = body.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise UsageLineError(f"{name} must be a whole number >= 0, not {value!r}")
        counts[field] = value
    usd = body.get("usd")
    if usd is not None and (
        not isinstance(usd, int | float)
        or isinstance(usd, bool)
        or not math.isfinite(usd)
        or usd < 0
    ):
        raise UsageLineError(f"usd must be a number >= 0, not {usd!r}")
    return Usage(
        input_tokens=counts["input_tokens"],
        output_tokens=counts["output_tokens"],
        cache_creation_tokens=counts["cache_creation_tokens"],
        cache_read_tokens=counts["cache_read_tokens"],
        usd=None if usd is None else float(usd),
    )


class UsageLineFilter:
    """Splits a command agent's stdout into output text, usage and warnings, in order.

    Fed the chunks `process.GroupProcess` reads (whole lines, except the pieces of a
    line longer than its read limit, which never end in a newline): only a whole line
    can be a usage line, and a piece's continuation is output as it was.
    """

    def __init__(self) -> None:
        self._in_long_line = False
        """The previous chunk ended inside a line (a piece of an over-long one)."""

    def split(self, text: str) -> list[AgentEvent]:
        """Events for one stdout chunk: `TextDelta`s (stream stdout) of the ordinary
        lines, `Usage` for each usage line, and a `TextDelta` of stream "warning" for
        each malformed one."""
        out: list[AgentEvent] = []
        kept: list[str] = []
        lines = _LINES.findall(text)
        continued, self._in_long_line = self._in_long_line, not text.endswith("\n")
        for index, line in enumerate(lines):
            whole = line.endswith("\n") and not (index == 0 and continued)
            try:
                usage = parse_usage_line(line) if whole else None
            except UsageLineError as exc:
                _flush(kept, out)
                out.append(TextDelta(warning(line, str(exc)), stream="warning"))
                continue
            if usage is None:
                kept.append(line)
            else:
                _flush(kept, out)
                out.append(usage)
        _flush(kept, out)
        return out


def warning(line: str, problem: str) -> str:
    """The transcript's line for a usage line that was not charged."""
    shown = line.strip()
    if len(shown) > SHOWN:
        shown = shown[:SHOWN] + "…"
    return f"loopvisor: malformed usage line, not charged: {problem}: {shown}\n"


def _flush(kept: list[str], out: list[AgentEvent]) -> None:
    if kept:
        out.append(TextDelta("".join(kept), stream="stdout"))
        kept.clear()
