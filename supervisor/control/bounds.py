"""What one response line may carry: an iteration's detail and history rows, bounded.

The journal keeps an iteration's whole transcript (up to `max_output_per_iteration`
of agent output plus checks and tool calls: megabytes), and a client reads a
server line of at most `protocol.MAX_SERVER_LINE`. The `iteration` op therefore
sends at most `sizes.DETAIL_WIRE_MAX_BYTES` of JSON: a transcript over that is cut
in the middle (its start and its end are kept: the task, and the errors that come
last) and a marker line says how much was left out and how to read all of it.
Sizes are measured as sent (UTF-8 JSON, escapes counted), so a transcript of
control characters (6 bytes each on the wire) is bounded too.
"""

from __future__ import annotations

import json
from typing import Any, Final

from supervisor.api import IterationDetail, IterationSummary, LoopDiff
from supervisor.sizes import format_size, size_of
from supervisor.textsafe import utf8

REASON_WIRE_CHARS: Final = 500
"""A history row's reason over the socket (the screen shows 60)."""
SUMMARY_CHARS: Final = 1000
"""An iteration detail's reason and each check's one-line summary."""
MAX_CHECKS: Final = 200
SNAP: Final = 4096
"""A cut moves to the nearest line break within this many characters."""


def wire_size(text: str) -> int:
    """Bytes `text` takes as a JSON string in a protocol line (quotes included)."""
    return len(utf8(json.dumps(text, ensure_ascii=False)))


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _head(text: str, budget: int) -> str:
    """A prefix of `text` of at most `budget` wire bytes, ending at a line break if one
    is near."""
    n = min(len(text), budget)
    while n > 0 and (size := wire_size(text[:n]) - 2) > budget:
        n = min(n - 1, n * budget // size)
    cut = text.rfind("\n", max(0, n - SNAP), n)
    return text[: cut + 1] if cut >= 0 else text[:n]


def _tail(text: str, budget: int) -> str:
    """A suffix of `text` of at most `budget` wire bytes, starting at a line start if one
    is near."""
    n = min(len(text), budget)
    while n > 0 and (size := wire_size(text[len(text) - n :]) - 2) > budget:
        n = min(n - 1, n * budget // size)
    start = len(text) - n
    nl = text.find("\n", start, min(len(text), start + SNAP))
    return text[nl + 1 :] if 0 <= nl < len(text) - 1 else text[start:]


def clip_middle(text: str, budget: int, marker: str) -> str:
    """`text` if it fits `budget` wire bytes, else its start, `marker` (with `{dropped}`
    for the bytes left out) and its end, all within `budget` (which should leave
    room for the marker: a few hundred bytes)."""
    if wire_size(text) <= budget:
        return text
    room = max(0, budget - wire_size(marker.replace("{dropped}", f"{size_of(text):,}")) - 16)
    head, tail = _head(text, room // 2), _tail(text, room - room // 2)
    dropped = size_of(text) - size_of(head) - size_of(tail)
    gap = "" if not head or head.endswith("\n") else "\n"
    return f"{head}{gap}{marker.replace('{dropped}', f'{dropped:,}')}\n{tail}"


def iteration_rows(rows: list[IterationSummary]) -> list[dict[str, Any]]:
    """History rows for the wire: each reason cut at `REASON_WIRE_CHARS`."""
    out = []
    for row in rows:
        data = row.to_dict()
        data["reason"] = _clip(row.reason, REASON_WIRE_CHARS)
        out.append(data)
    return out


def loop_diff(diff: LoopDiff, limit: int) -> dict[str, Any]:
    """`diff` as at most ~`limit` bytes of JSON: a patch that would not fit keeps its
    start (the files in order; `stat` still counts them all) and ends in a marker."""
    data = diff.to_dict()
    data["text"] = ""
    data["note"] = _clip(diff.note, SUMMARY_CHARS)
    room = max(1024, limit - len(utf8(json.dumps(data, ensure_ascii=False))) - 512)
    if wire_size(diff.text) <= room:
        data["text"] = diff.text
        return data
    head = _head(diff.text, room)
    where = f"`loopvisor diff {diff.loop}" + (
        f" --iteration {diff.iteration}`" if diff.iteration is not None else "`"
    )
    data["text"] = (
        f"{head}{'' if not head or head.endswith(chr(10)) else chr(10)}"
        f"✂ {size_of(diff.text) - size_of(head):,} bytes of this diff left out here: a diff"
        f" sent over the control socket is at most {format_size(limit)}; {where} on the"
        " server's machine prints all of it\n"
    )
    data["truncated"] = True
    return data


def iteration_detail(detail: IterationDetail, limit: int) -> dict[str, Any]:
    """`detail` as at most ~`limit` bytes of JSON: the prompt within a quarter of it,
    reasons and check summaries one line each, the transcript in what is left."""
    data = detail.to_dict()
    data["summary"]["reason"] = _clip(detail.summary.reason, SUMMARY_CHARS)
    data["checks"] = [
        {**c, "summary": _clip(str(c["summary"]), SUMMARY_CHARS)}
        for c in data["checks"][:MAX_CHECKS]
    ]
    where = f"`loopvisor history {detail.loop} --iteration {detail.iteration}`"
    data["prompt"] = clip_middle(
        detail.prompt,
        limit // 4,
        "✂ {dropped} bytes of this prompt"
        f" left out here (over {format_size(limit // 4)}"
        f" on the control socket); {where} on the server's machine shows all of it",
    )
    data["transcript"] = ""
    rest = max(1024, limit - len(utf8(json.dumps(data, ensure_ascii=False))) - 256)
    data["transcript"] = clip_middle(
        detail.transcript,
        rest,
        "✂ {dropped} bytes of this transcript left out here: an iteration's detail"
        f" sent over the control socket is at most {format_size(limit)};"
        f" {where} on the server's machine shows all of it",
    )
    return data
