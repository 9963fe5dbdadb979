"""The records of Claude Code's stream-json output, apart from the parser's state:
a line decoded, the `system/init` and `result` lines as values, and how an unknown
line, a tool's output and the init line are shown in the transcript (bounded)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from supervisor.agents.base import TextDelta
from supervisor.agents.usage import Tokens
from supervisor.textsafe import json_loads

RAW_LINE_LIMIT = 2000
"""Characters of an unknown line kept in the transcript."""
TOOL_OUTPUT_LIMIT = 16 * 1024
"""Characters of one tool result kept in the transcript (a Read can return megabytes)."""


@dataclass(frozen=True, slots=True)
class InitInfo:
    """What `system/init` tells about the run."""

    session_id: str | None
    model: str | None
    cwd: str | None
    tools: tuple[str, ...]
    permission_mode: str | None
    version: str | None


@dataclass(frozen=True, slots=True)
class ResultInfo:
    """The final `result` line, with this invocation's usage resolved."""

    subtype: str
    is_error: bool
    text: str | None
    session_id: str | None
    num_turns: int
    tokens: Tokens
    """This invocation's tokens (the reconciliation target)."""
    usd: float | None
    """This invocation's USD (None: the CLI did not say)."""
    total_cost_usd: float | None
    """As printed: cumulative over the session after `--resume`."""
    terminal_reason: str | None
    api_error_status: int | None
    errors: tuple[str, ...]
    permission_denials: int


def decode(line: str) -> dict[str, Any] | None:
    """One stream-json line as a JSON object, or None (blank, malformed, not an object).

    Its strings come out valid (`"\\ud800"` becomes U+FFFD): they reach the journal,
    every printer and the next prompt.
    """
    text = line.strip()
    if not text:
        return None
    try:
        value = json_loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def describe_init(info: InitInfo) -> str:
    parts = [f"claude {info.version or '?'} session {info.session_id or '?'}"]
    parts.append(f"model {info.model or '?'}")
    if info.permission_mode:
        parts.append(f"permissions {info.permission_mode}")
    if info.cwd:
        parts.append(f"cwd {info.cwd}")
    parts.append(f"{len(info.tools)} tools: {', '.join(info.tools)}")
    return " · ".join(parts) + "\n"


def raw_line(line: str) -> TextDelta:
    text = line.rstrip("\n")
    if len(text) > RAW_LINE_LIMIT:
        text = text[:RAW_LINE_LIMIT] + f" [... {len(text) - RAW_LINE_LIMIT} more characters]"
    return TextDelta(text + "\n", stream="raw")


def tool_output(content: Any) -> str:
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts: list[str] = []
        for block in content:
            if isinstance(block, Mapping) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif isinstance(block, Mapping):
                parts.append(f"[{block.get('type', 'block')}]")
            else:
                parts.append(str(block))
        text = "\n".join(parts)
    elif content is None:
        text = ""
    else:
        text = json.dumps(content)
    if len(text) > TOOL_OUTPUT_LIMIT:
        text = text[:TOOL_OUTPUT_LIMIT] + f"\n[... {len(text) - TOOL_OUTPUT_LIMIT} more characters]"
    return text


def text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
