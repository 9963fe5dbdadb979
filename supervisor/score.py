"""Metric loops: a check's score, and the board that keeps only improvements.

A check with `score` (`spec.ScoreSpec`) yields a number per iteration, read from its
output (`pattern`'s first group, the last match) or from a JSON file it wrote. A
check that passed but yields no number has failed: a score loop must never keep an
iteration it could not measure.

`ScoreBoard` is the loop's memory of its scores: each judged iteration is kept when
its checks passed and its score beats the best so far (strictly: `direction`), else
it is not, and a worktree loop's branch goes back to the best commit before the next
prompt (`loop_worktree.finish_iteration` does the `git reset --hard`). The loop ends
succeeded when the best reaches `target`, or after `plateau` iterations in a row
without an improvement. The board is rebuilt after a crash from the journalled
`IterationFinished` events (their `score`, `kept` and the branch head they left),
so `--resume` keeps the best score and its commit.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.spec import ScoreSpec

JSON_LIMIT = 1_000_000
"""Bytes of a score's JSON file read at most."""


def read_score(spec: ScoreSpec, output: str, workspace: Path) -> tuple[float | None, str]:
    """(the score, "") or (None, why there is none: a check failure's reason)."""
    if spec.pattern is not None:
        matches = list(re.finditer(spec.pattern, output, re.MULTILINE))
        if not matches:
            return None, f"no score: output did not match score pattern {spec.pattern!r}"
        return _number(matches[-1].group(1), f"score pattern {spec.pattern!r} matched")
    assert spec.json is not None
    assert spec.key is not None
    path = workspace / spec.json
    try:
        with path.open("rb") as f:
            raw = f.read(JSON_LIMIT + 1)
    except OSError as exc:
        return None, f"no score: cannot read {spec.json}: {exc.strerror or exc}"
    if len(raw) > JSON_LIMIT:
        return None, f"no score: {spec.json} is larger than {JSON_LIMIT:,} bytes"
    try:
        value: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"no score: {spec.json} is not JSON: {exc}"
    for part in spec.key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None, f"no score: {spec.json} has no key {spec.key!r}"
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None, f"no score: {spec.json} {spec.key!r} is not a number"
    return _number(str(value), f"{spec.json} {spec.key!r}")


def _number(text: str | None, where: str) -> tuple[float | None, str]:
    try:
        value = float((text or "").strip())
    except ValueError:
        return None, f"no score: {where} {text!r}, which is not a number"
    if not math.isfinite(value):
        return None, f"no score: {where} {text!r}, which is not a finite number"
    return value, ""


def show(score: float | None) -> str:
    """A score as people read it: 0.62, 1234, 1.5e-07; "-" for none."""
    return "-" if score is None else f"{score:.6g}"


@dataclass(frozen=True, slots=True)
class ScoreEntry:
    """One judged iteration."""

    iteration: int
    score: float | None
    kept: bool
    head: str | None = None
    """The branch's HEAD once the iteration was judged (kept: its commit; not kept:
    the best commit it was reverted to); None when the loop has no worktree."""


@dataclass(frozen=True, slots=True)
class Judgement:
    """What the board made of one iteration."""

    score: float | None
    kept: bool
    reason: str
    """For the iteration's reason: the score and whether it was kept."""
    done: str | None = None
    """Set when the loop is done: why (target reached, plateau)."""


class ScoreBoard:
    """A metric loop's scores (see the module docstring)."""

    def __init__(self, spec: ScoreSpec) -> None:
        self.spec = spec
        self.entries: list[ScoreEntry] = []

    @property
    def best(self) -> ScoreEntry | None:
        return next((e for e in reversed(self.entries) if e.kept), None)

    @property
    def best_head(self) -> str | None:
        """Where a worse iteration goes back to: the branch as the last judged one left it."""
        return self.entries[-1].head if self.entries else None

    @property
    def since_best(self) -> int:
        """Iterations judged since the last improvement (all of them when none)."""
        best = self.best
        return sum(1 for e in self.entries if best is None or e.iteration > best.iteration)

    def judge(self, iteration: int, score: float | None, passed: bool) -> Judgement:
        """Whether iteration `iteration` is kept, and whether the loop is done; the
        caller records it with `record` once the branch is where it belongs."""
        best = self.best
        improves = passed and score is not None and (best is None or self._better(score, best))
        if improves:
            assert score is not None
            was = "" if best is None else f", was {show(best.score)} in iteration {best.iteration}"
            reason = f"score {show(score)}: kept, best so far{was}"
        elif score is None:
            reason = "no score: not kept"
        else:
            assert best is not None or not passed
            than = f"best {show(best.score)} (iteration {best.iteration})" if best else "no best"
            why = "checks failed" if not passed else f"not better than {than}"
            reason = f"score {show(score)}, {why}: not kept"
        return Judgement(score, improves, reason, self._done(iteration, score, improves))

    def _better(self, score: float, best: ScoreEntry) -> bool:
        assert best.score is not None
        return score > best.score if self.spec.direction == "max" else score < best.score

    def _done(self, iteration: int, score: float | None, kept: bool) -> str | None:
        spec = self.spec
        if kept and score is not None and spec.target is not None:
            reached = score >= spec.target if spec.direction == "max" else score <= spec.target
            if reached:
                goal = show(spec.target)
                return f"score {show(score)} reached target {goal} in iteration {iteration}"
        since = 0 if kept else self.since_best + 1
        if spec.plateau is not None and since >= spec.plateau:
            best = self.best
            if best is None:
                return f"plateau: no score in {since} iterations"
            return (
                f"plateau: no improvement in {since} iterations; best score"
                f" {show(best.score)} in iteration {best.iteration}"
            )
        return None

    def record(self, iteration: int, judgement: Judgement, head: str | None) -> None:
        self.entries = [e for e in self.entries if e.iteration < iteration]
        self.entries.append(ScoreEntry(iteration, judgement.score, judgement.kept, head))

    def restore(self, entries: list[ScoreEntry]) -> None:
        self.entries = sorted(entries, key=lambda e: e.iteration)

    def history(self) -> str:
        """`$score_history`: one line per judged iteration, then the best."""
        if not self.entries:
            return "(no scores yet)"
        lines = [
            f"iteration {e.iteration}: {show(e.score)} ({'kept' if e.kept else 'reverted'})"
            for e in self.entries
        ]
        best = self.best
        goal = "higher" if self.spec.direction == "max" else "lower"
        lines.append(
            f"best: {show(best.score)} (iteration {best.iteration}); {goal} is better"
            if best is not None
            else f"best: none yet; {goal} is better"
        )
        return "\n".join(lines)

    def snapshot_fields(self) -> dict[str, Any]:
        return snapshot_fields(self.entries)


def snapshot_fields(entries: Sequence[ScoreEntry]) -> dict[str, Any]:
    """`api.LoopSnapshot`'s `scores`, `best_score` and `best_iteration` of a metric
    loop (live, or read from the journal by `status --json`)."""
    best = next((e for e in reversed(entries) if e.kept), None)
    return {
        "scores": tuple(e.score for e in entries),
        "best_score": best.score if best is not None else None,
        "best_iteration": best.iteration if best is not None else 0,
    }
