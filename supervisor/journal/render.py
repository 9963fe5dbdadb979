"""The journal's rows as text: transcripts (for `history --iteration` and, with each
line's kind, for the console) and the tables of `history` and `status`.

Pure functions of what `JournalReader` returns; the journal's transcript keeps its
own glyphs (`→ tool`, `$ command`, `✓ check`), which `loopvisor history` has always
printed. A line's kind comes from the core's renderer (`render.describe`), the
one place kinds are decided.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from supervisor.events import event_from_dict
from supervisor.lines import LineKind, LineSplitter, TranscriptLine, kinded, stream_kind
from supervisor.render import describe
from supervisor.score import show
from supervisor.sizes import truncation_message
from supervisor.status_table import TOKENS, USD, StatusRow, status_layout
from supervisor.textsafe import for_terminal, for_terminal_line

if TYPE_CHECKING:
    from supervisor.journal.reader import IterationDetail, IterationRow, LoopStatusRow, RunRow


SHORT_SHA = 10
"""Characters of a commit id shown in tables and transcripts (git's own `--short` is 7+)."""


# -- transcripts ---------------------------------------------------------------
def _clip(text: str, width: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def describe_event(data: dict[str, Any], *, verbose: bool = False) -> str | None:
    """One transcript line for a non-output event (None: not shown)."""
    kind = data.get("type")
    if kind == "iteration_started":
        return f"── iteration {data.get('iteration')} ──"
    if kind == "iteration_finished":
        commit = data.get("commit")
        return (
            f"── iteration {data.get('iteration')}: {data.get('outcome')} ({data.get('reason')})"
            f" · {int(data.get('tokens', 0)):,} tokens · ${float(data.get('usd', 0.0)):.4f}"
            + (f" · commit {str(commit)[:SHORT_SHA]}" if commit else "")
        )
    if kind == "tool_call":
        return f"→ {data.get('name')} {_clip(json.dumps(data.get('input'), default=str))}"
    if kind == "tool_result":
        flag = " (error)" if data.get("is_error") else ""
        return f"←{flag} {_clip(str(data.get('output', '')))}"
    if kind == "check_started":
        return f"$ {data.get('command')}"
    if kind == "check":
        mark = "✓" if data.get("passed") else "✗"
        line = f"{mark} check {data.get('name')}: {data.get('summary')}"
        output = str(data.get("output", "")).rstrip()
        if verbose and output:
            line += "\n" + "\n".join("  │ " + ln for ln in output.splitlines())
        return line
    if kind == "stuck":
        return f"! stuck ({data.get('detector')}): {data.get('evidence')} → {data.get('action')}"
    if kind == "control":
        return f"» operator {data.get('op')} {data.get('detail', '')}".rstrip()
    if kind == "notice":
        return f"[{data.get('level', 'info')}] {data.get('message')}"
    if kind == "output_truncated":
        return truncation_message(int(data.get("dropped", 0)), int(data.get("limit", 0)))
    return None


def line_kind(data: dict[str, Any]) -> LineKind:
    """The kind the core gives this event's line (PLAIN for a row it cannot read)."""
    try:
        line = describe(event_from_dict(data))
    except (TypeError, ValueError):
        return LineKind.PLAIN
    return line.kind if line is not None else LineKind.PLAIN


def transcript_lines(
    events: Iterable[dict[str, Any]], *, verbose: bool = False
) -> list[TranscriptLine]:
    """`render_transcript`'s lines, each with its kind (a check's verbose output: CHECK)."""
    out: list[TranscriptLine] = []
    splitter = LineSplitter(max_chars=None)
    streamed = LineKind.TEXT
    for data in events:
        if data.get("type") == "output":
            streamed = stream_kind(str(data.get("stream", "assistant")))
            out += kinded(streamed, splitter.feed(str(data.get("text", ""))))
            continue
        text = describe_event(data, verbose=verbose)
        if text is None:
            continue
        if splitter.partial:
            out.append(TranscriptLine(streamed, splitter.flush()))
        first, *more = text.split("\n")
        out.append(TranscriptLine(line_kind(data), first))
        out += kinded(LineKind.CHECK, more)
    if splitter.partial:
        out.append(TranscriptLine(streamed, splitter.flush()))
    return out


def render_transcript(events: Iterable[dict[str, Any]], *, verbose: bool = False) -> str:
    """Event dicts (in order) as transcript text; output deltas verbatim."""
    out: list[str] = []
    at_line_start = True
    for data in events:
        if data.get("type") == "output":
            text = str(data.get("text", ""))
            if text:
                out.append(text)
                at_line_start = text.endswith("\n")
            continue
        line = describe_event(data, verbose=verbose)
        if line is None:
            continue
        if not at_line_start:
            out.append("\n")
        out.append(line + "\n")
        at_line_start = True
    return "".join(out)


# -- CLI formatters (pure) -----------------------------------------------------
def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _epoch(ts: float | None) -> float | None:
    return None if ts is None else round(ts, 3)


def _run_state(run: RunRow) -> str:
    if run.live:
        return "live"
    if run.ended is None:
        return "unfinished (supervisor gone; `loopvisor run --resume` continues it)"
    return f"ended, exit {run.exit_code}" + (
        f": {for_terminal_line(run.reason)}" if run.reason else ""
    )


def format_runs(runs: Sequence[RunRow]) -> str:
    """`loopvisor history` without a loop: one line per run, newest first."""
    if not runs:
        return "no runs recorded yet"
    lines = [f"{'RUN':<24} {'STARTED':<19} {'WALL':>7} {'TOKENS':>10} {'USD':>9}  STATE"]
    for r in runs:
        wall = _dur((r.ended if r.ended is not None else time.time()) - r.started)
        lines.append(
            f"{r.run_id:<24} {_when(r.started):<19} {wall:>7} {r.tokens:>10,} {r.usd:>9.4f}"
            f"  {_run_state(r)}  [{for_terminal_line(', '.join(r.loops))}]"
        )
    return "\n".join(lines)


def _forked(forked: Mapping[str, str], loop: str) -> str:
    parent = forked.get(loop)
    return f"forked from {for_terminal_line(parent)} · " if parent else ""


def format_history(
    loop: str,
    rows: Sequence[IterationRow],
    charged: tuple[int, float] | None = None,
    forked_from: str = "",
) -> str:
    """`loopvisor history LOOP`: one line per attempt; the total is what the ledger
    `charged` (when given), with the operator's step-in chat as a line of its own;
    a fork's heading says what it was forked from ("PARENT@N")."""
    if not rows:
        return f"{for_terminal_line(loop)}: no iterations recorded"
    head = f"{for_terminal_line(loop)} · run {rows[0].run_id}"
    if forked_from:
        head += f" · forked from {for_terminal_line(forked_from)}"
    # A worktree loop's checkpoint commits get a column; other loops' table is unchanged.
    commits = any(r.commit for r in rows)
    sha = f" {'COMMIT':<{SHORT_SHA}}" if commits else ""
    # A metric loop's scores get a column too (kept ones marked `*`).
    scored = any(r.kept is not None for r in rows)
    score = f" {'SCORE':>9}" if scored else ""
    lines = [
        head,
        f"{'ITER':>6} {'OUTCOME':<12} {'TOKENS':>9} {'USD':>9} {'TIME':>7}{score}{sha}  REASON",
    ]
    for r in rows:
        label = f"{r.iteration}" if r.attempt == 1 else f"{r.iteration}#{r.attempt}"
        sha = f" {(r.commit or '-')[:SHORT_SHA]:<{SHORT_SHA}}" if commits else ""
        score = f" {_score(r):>9}" if scored else ""
        lines.append(
            f"{label:>6} {r.outcome or 'running':<12} {r.tokens:>9,} {r.usd:>9.4f}"
            f" {_dur(r.duration_s):>7}{score}{sha}  {for_terminal_line(r.reason)}"
        )
    tokens, usd = sum(r.tokens for r in rows), sum(r.usd for r in rows)
    if charged is not None and charged[0] > tokens:
        chat_tokens, chat_usd = charged[0] - tokens, max(0.0, charged[1] - usd)
        lines.append(
            f"{'chat':>6} {'':<12} {chat_tokens:>9,} {chat_usd:>9.4f} {'':>7}  step-in chat"
        )
        tokens, usd = charged
    lines.append(f"{'total':>6} {'':<12} {tokens:>9,} {usd:>9.4f}")
    return "\n".join(lines)


def _score(row: IterationRow) -> str:
    if row.kept is None:
        return ""
    return f"{show(row.score)}{'*' if row.kept else ' '}"


def format_iteration(loop: str, iteration: int, detail: IterationDetail) -> str:
    """`loopvisor history LOOP --iteration N`: the prompt as sent, then the transcript.

    For a terminal: what the agent printed is shown (`\\x1b`), never obeyed.
    """
    return (
        f"── {for_terminal_line(loop)} · iteration {iteration} · prompt ──\n"
        f"{for_terminal(detail.prompt.rstrip())}\n\n"
        f"── transcript ──\n{for_terminal(detail.transcript.rstrip())}\n"
    )


def history_dict(
    loop: str, rows: Sequence[IterationRow], charged: tuple[int, float] | None = None
) -> dict[str, Any]:
    """`history LOOP --json`: exactly {"loop", "iterations": [{iteration, outcome, reason,
    tokens, usd, started, ended, commit, score, kept}], "total": {tokens, usd}}; times
    epoch seconds, outcome/ended null while running, commit null when the iteration made no
    checkpoint commit, score and kept null but for a metric loop's judged iterations; the
    total is the ledger's (step-in chat included)."""
    tokens, usd = charged or (sum(r.tokens for r in rows), sum(r.usd for r in rows))
    return {
        "loop": loop,
        "iterations": [
            {
                "iteration": r.iteration,
                "outcome": r.outcome,
                "reason": r.reason,
                "tokens": r.tokens,
                "usd": round(r.usd, 6),
                "started": _epoch(r.started),
                "ended": _epoch(r.ended),
                "commit": r.commit,
                "score": r.score,
                "kept": r.kept,
            }
            for r in rows
        ],
        "total": {"tokens": tokens, "usd": round(usd, 6)},
    }


def format_status(
    run: RunRow | None, rows: Sequence[LoopStatusRow], forked: Mapping[str, str] | None = None
) -> str:
    """`loopvisor status`: the run line, then one line per loop (a fork's reason says
    what it was forked from: `forked` maps it to "PARENT@N")."""
    if run is None:
        return "no runs recorded yet"
    layout = status_layout()
    forked = forked or {}
    table = [
        StatusRow(
            r.loop,
            r.state,
            r.iteration,
            r.tokens,
            r.usd,
            _forked(forked, r.loop) + r.reason,
            best_score=r.best_score,
        )
        for r in rows
    ]
    total = StatusRow("total", "", 0, sum(r.tokens for r in rows), sum(r.usd for r in rows), "")
    return "\n".join(
        [
            f"run {run.run_id} · started {_when(run.started)} · {_run_state(run)}",
            *layout.table(table),
            layout.line(["total", "", "", TOKENS.cell(total), USD.cell(total)]),
        ]
    )
