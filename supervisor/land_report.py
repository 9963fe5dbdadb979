"""What a pull request says about the loop that made it: a title from the loop, a body
from its history (iterations with outcome and reason, its checks' last verdicts,
tokens and USD).

The history comes from the journal for `loopvisor land` (a command beside, or after,
a run), and from `LoopRecords` inside a running supervisor: a sink on its bus that
sees every event as it is published, so `on_success = "pr"` describes the iteration
that just succeeded (the journal's reader would miss its last ~50 ms batch). Every
text is redacted: it leaves the machine.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from supervisor import events as ev
from supervisor.journal.schema import JournalError
from supervisor.spec import LoopSpec

KEPT_ITERATIONS = 200
"""Iterations a record keeps (a scheduled loop runs without end); the body says so."""
_TITLE_MAX = 72
_REASON_MAX = 160


@dataclass(frozen=True, slots=True)
class IterationLine:
    iteration: int
    outcome: str
    reason: str
    tokens: int
    usd: float


@dataclass(slots=True)
class LoopRecord:
    """One loop's history as a pull request tells it."""

    iterations: deque[IterationLine] = field(default_factory=lambda: deque(maxlen=KEPT_ITERATIONS))
    checks: dict[str, tuple[bool, str]] = field(default_factory=dict)
    """The last verdict of each check: (passed, summary)."""
    dropped: int = 0
    """Older iterations no longer kept."""

    @property
    def tokens(self) -> int:
        return sum(i.tokens for i in self.iterations)

    @property
    def usd(self) -> float:
        return sum(i.usd for i in self.iterations)


class LoopRecords:
    """A lossless bus sink: each loop's iterations and last check verdicts, in memory."""

    def __init__(self) -> None:
        self._loops: dict[str, LoopRecord] = {}

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.ScheduledRun):  # a new run of the loop: a new history
            self._loops.pop(event.loop, None)
        elif isinstance(event, ev.IterationFinished):
            record = self._loops.setdefault(event.loop, LoopRecord())
            if len(record.iterations) == KEPT_ITERATIONS:
                record.dropped += 1
            record.iterations.append(
                IterationLine(event.iteration, event.outcome, event.reason, event.tokens, event.usd)
            )
        elif isinstance(event, ev.CheckFinished):
            record = self._loops.setdefault(event.loop, LoopRecord())
            record.checks[event.name] = (event.passed, event.summary)

    def get(self, loop: str) -> LoopRecord:
        return self._loops.get(loop) or LoopRecord()


def record_from_journal(state_dir: Path, loop: str) -> LoopRecord:
    """The loop's history in the newest run of the journal that has it (empty when
    there is no journal or no such loop: a pull request can still be opened)."""
    record = LoopRecord()
    try:
        from supervisor.journal.reader import JournalReader  # only when a PR is opened

        with JournalReader(state_dir) as reader:
            rows = reader.loop_iterations(loop)
            for row in rows[-KEPT_ITERATIONS:]:
                record.iterations.append(
                    IterationLine(
                        row.iteration, row.outcome or "running", row.reason, row.tokens, row.usd
                    )
                )
            record.dropped = max(0, len(rows) - KEPT_ITERATIONS)
            if rows:
                for check in reader.iteration_checks(loop, rows[-1].iteration, rows[-1].run_id):
                    record.checks[str(check.get("name"))] = (
                        bool(check.get("passed")),
                        str(check.get("summary", "")),
                    )
    except (JournalError, OSError):
        pass
    return record


def pr_title(spec: LoopSpec) -> str:
    """`LOOP: the prompt's first line`, cut to a title's length."""
    first = next((line.strip() for line in spec.prompt.splitlines() if line.strip()), "")
    title = f"{spec.name}: {first}" if first else f"{spec.name} (loopvisor)"
    return title if len(title) <= _TITLE_MAX else title[: _TITLE_MAX - 1] + "…"


def pr_body(spec: LoopSpec, record: LoopRecord, branch: str, base: str) -> str:
    """Markdown: what the loop did, iteration by iteration, and what its checks say."""
    n = len(record.iterations) + record.dropped
    lines = [
        f"Made by the loopvisor loop `{spec.name}` on branch `{branch}` (from `{base}`): "
        f"{n} iteration(s), {record.tokens:,} tokens, ${record.usd:.4f}.",
        "",
    ]
    if record.iterations:
        lines += ["| iteration | outcome | tokens | USD | reason |", "|---:|---|---:|---:|---|"]
        if record.dropped:
            lines.append(f"| … | {record.dropped} earlier iteration(s) not shown | | | |")
        for it in record.iterations:
            lines.append(
                f"| {it.iteration} | {it.outcome} | {it.tokens:,} | {it.usd:.4f} "
                f"| {_cell(it.reason)} |"
            )
        lines.append(f"| total | | {record.tokens:,} | {record.usd:.4f} | |")
        lines.append("")
    if record.checks:
        lines.append("Checks (last run):")
        for name, (passed, summary) in record.checks.items():
            lines.append(f"- {'✔' if passed else '✘'} `{name}`: {_cell(summary)}")
        lines.append("")
    lines.append(f"Opened by `loopvisor land {spec.name} --pr`.")
    return "\n".join(lines) + "\n"


def pr_text(
    spec: LoopSpec, record: LoopRecord, branch: str, base: str, redact: Callable[[str], str]
) -> tuple[str, str]:
    """(title, body), redacted."""
    return redact(pr_title(spec)), redact(pr_body(spec, record, branch, base))


def _cell(text: str) -> str:
    """One line of a Markdown table cell."""
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= _REASON_MAX else flat[: _REASON_MAX - 1] + "…"
