"""Stuck and stall detectors: is a loop spending without making progress?

`StuckDetector.observe` is called once per finished iteration with what it produced
(agent output, the combined check fingerprint, its cost) and returns a verdict that
names its evidence, or None. Detectors, each configured by `StuckSpec` (0 / None
turns one off):

- same_failure: the same non-empty check fingerprint N times in a row while the
  agent's turns leave the workspace's files as they were. A pass, a different
  fingerprint or a turn that changed files starts the streak again; passing checks
  never count.
- same_output: near-identical agent output K times in a row, while its turns change
  no files (as for same_failure). Outputs are normalised
  (whitespace, digits), long ones compared by their first and last 4k characters,
  with difflib's cheap upper bounds tried before the real ratio. Empty outputs are
  identical to each other.
- oscillation: the last four iterations alternate A/B/A/B, where a signature is the
  output plus the check fingerprint and A != B.
- cost_spike: an iteration's USD (tokens when it reports no USD) is more than
  `factor` x the median of the loop's previous iterations (at least three, and a
  non-zero median), and above a floor so that fractions of a cent do not count.

Repeats: a streak detector fires when its streak first reaches the threshold and
again each time it grows by another threshold (N, 2N, 3N... for same_failure; 4, 8,
12... alternating iterations for oscillation). With `on_stuck = "continue"` a loop
that stays stuck is therefore reported periodically, not every iteration and not
only once. A cost spike is one iteration's event and fires each time it happens.
When several detectors fire in one iteration, the first in the order above wins
(the others' streaks still advance).

Stall (no tokens or output for T seconds) is measured by the loop's watchdog while
the agent runs; `stall()` only builds its verdict.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from supervisor.durations import format_duration
from supervisor.spec import StuckSpec

COMPARE_CHARS = 4_000
"""Characters compared from each end of a long output."""
COST_WINDOW = 50
"""Previous iterations whose median a cost is compared with."""
MIN_SPIKE_USD = 0.01
MIN_SPIKE_TOKENS = 1_000
"""A spike must also reach these absolutes: 5x a tiny median is still tiny."""
_OSCILLATION_RUN = 4
_MAX_EVIDENCE = 200

_WHITESPACE = re.compile(r"\s+")
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class StuckVerdict:
    """Which detector fired, and one line a person understands saying why."""

    detector: str
    """"same_failure" | "same_output" | "oscillation" | "stall" | "cost_spike"."""
    evidence: str


@dataclass(frozen=True, slots=True)
class _Step:
    iteration: int
    output: tuple[str, ...]
    """Normalised, capped and split into words."""
    fingerprint: str
    evidence: str


class StuckDetector:
    """Per-loop history of recent iterations; cheap to feed, bounded in memory."""

    def __init__(self, spec: StuckSpec) -> None:
        self._spec = spec
        self.reset()

    def reset(self) -> None:
        """Forget everything (operator restart, edit or inject: a fresh start)."""
        self._recent: deque[_Step] = deque(maxlen=2)
        self._failure_streak = 0
        self._output_streak = 0
        self._output_min_ratio = 1.0
        self._alternating = 0
        self._alternating_from = 0
        self._usd: deque[float] = deque(maxlen=COST_WINDOW)
        self._tokens: deque[int] = deque(maxlen=COST_WINDOW)
        self._observed = 0

    def observe(
        self,
        *,
        iteration: int,
        output: str,
        check_fingerprint: str,
        check_evidence: str,
        checks_passed: bool,
        usd: float,
        tokens: int,
        workspace_changed: bool = False,
    ) -> StuckVerdict | None:
        """Record one finished iteration; a verdict when a detector reaches its threshold.

        `workspace_changed`: the agent's turn changed the workspace's files. The same
        failure after a change is progress (the agent works through the problem), so
        it starts the same-failure and same-output streaks again instead of extending
        them (an agent that says "Updated the file." after every edit is not stuck)."""
        fingerprint = "" if checks_passed else check_fingerprint
        step = _Step(iteration, _normalise(output), fingerprint, check_evidence)
        verdicts = [
            self._same_failure(step, workspace_changed),
            self._same_output(step, workspace_changed),
            self._oscillation(step),
            self._cost_spike(usd, tokens),
        ]
        self._recent.append(step)
        self._observed += 1
        return next((v for v in verdicts if v is not None), None)

    def snapshot(self) -> dict[str, Any]:
        """Everything `observe` has learnt, JSON-ready: journalled after each iteration so
        that a resumed loop is declared stuck exactly when an uninterrupted one would be."""
        return {
            "recent": [
                [s.iteration, list(s.output), s.fingerprint, s.evidence] for s in self._recent
            ],
            "failure_streak": self._failure_streak,
            "output_streak": self._output_streak,
            "output_min_ratio": self._output_min_ratio,
            "alternating": self._alternating,
            "alternating_from": self._alternating_from,
            "usd": list(self._usd),
            "tokens": list(self._tokens),
            "observed": self._observed,
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        """Load a `snapshot()`; a snapshot that does not fit (older journal) forgets all."""
        self.reset()
        try:
            self._recent.extend(
                _Step(int(i), tuple(str(w) for w in words), str(fp), str(evidence))
                for i, words, fp, evidence in data["recent"]
            )
            self._failure_streak = int(data["failure_streak"])
            self._output_streak = int(data["output_streak"])
            self._output_min_ratio = float(data["output_min_ratio"])
            self._alternating = int(data["alternating"])
            self._alternating_from = int(data["alternating_from"])
            self._usd.extend(float(x) for x in data["usd"])
            self._tokens.extend(int(x) for x in data["tokens"])
            self._observed = int(data["observed"])
        except (KeyError, TypeError, ValueError):
            self.reset()

    def stall(self, silent_for_s: float) -> StuckVerdict:
        """The verdict for an agent that produced nothing for `silent_for_s` seconds."""
        return StuckVerdict("stall", f"no output for {format_duration(silent_for_s)}")

    def statistics(self) -> dict[str, object]:
        """Current streaks and cost medians, for the UI."""
        return {
            "iterations": self._observed,
            "same_failure_streak": self._failure_streak,
            "same_output_streak": self._output_streak,
            "alternating_run": self._alternating,
            "median_usd": _statistics_median(self._usd) if self._usd else None,
            "median_tokens": _statistics_median(self._tokens) if self._tokens else None,
        }

    # -- detectors (each advances its own state) -----------------------------------

    def _same_failure(self, step: _Step, workspace_changed: bool) -> StuckVerdict | None:
        previous = self._recent[-1] if self._recent else None
        if not step.fingerprint:
            self._failure_streak = 0
        elif workspace_changed:
            self._failure_streak = 1
        elif previous is not None and previous.fingerprint == step.fingerprint:
            self._failure_streak += 1
        else:
            self._failure_streak = 1
        threshold = self._spec.same_failure
        if not _fires(self._failure_streak, threshold):
            return None
        evidence = f"same check failure {self._failure_streak}×"
        if step.evidence:
            evidence += f" — {step.evidence}"
        return StuckVerdict("same_failure", _clip(evidence))

    def _same_output(self, step: _Step, workspace_changed: bool) -> StuckVerdict | None:
        ratio = self._similarity(step, -1)
        if ratio is not None and ratio >= self._spec.similarity and not workspace_changed:
            self._output_streak += 1
            self._output_min_ratio = min(self._output_min_ratio, ratio)
        else:
            self._output_streak = 1
            self._output_min_ratio = 1.0
        if not _fires(self._output_streak, self._spec.same_output):
            return None
        n = self._output_streak
        if not step.output:
            return StuckVerdict("same_output", f"agent output empty {n}× in a row")
        percent = int(self._output_min_ratio * 100)
        return StuckVerdict("same_output", f"agent output {percent}% identical {n}× in a row")

    def _oscillation(self, step: _Step) -> StuckVerdict | None:
        if self._recent and self._same(step, -1):
            self._alternating = 1
        elif len(self._recent) == 2 and self._alternating >= 2 and self._same(step, -2):
            self._alternating += 1
        else:
            self._alternating = 2 if self._recent else 1
        if self._alternating <= 2:
            self._alternating_from = self._recent[-1].iteration if self._recent else step.iteration
        if not self._spec.oscillation or not _fires(self._alternating, _OSCILLATION_RUN):
            return None
        previous = self._recent[-1]
        outputs_differ = not self._similar_output(step, -1)
        what = (
            "outputs and check failures"
            if outputs_differ and step.fingerprint != previous.fingerprint
            else "outputs"
            if outputs_differ
            else "check failures"
        )
        evidence = (
            f"{what} alternate A/B/A/B over iterations {self._alternating_from}–{step.iteration}"
        )
        if step.fingerprint != previous.fingerprint and step.evidence and previous.evidence:
            evidence += f" ({previous.evidence} / {step.evidence})"
        return StuckVerdict("oscillation", _clip(evidence))

    def _cost_spike(self, usd: float, tokens: int) -> StuckVerdict | None:
        verdict: StuckVerdict | None = None
        factor = self._spec.cost_spike
        if factor and usd > 0:
            median = _median(self._usd)
            if median and usd > factor * median and usd >= MIN_SPIKE_USD:
                verdict = StuckVerdict(
                    "cost_spike",
                    f"iteration cost {_usd(usd)} is {usd / median:.1f}× the median {_usd(median)}",
                )
        elif factor and tokens > 0:
            median = _median(self._tokens)
            if median and tokens > factor * median and tokens >= MIN_SPIKE_TOKENS:
                verdict = StuckVerdict(
                    "cost_spike",
                    f"iteration used {tokens:,} tokens, {tokens / median:.1f}× "
                    f"the median {round(median):,}",
                )
        if usd > 0:
            self._usd.append(usd)
        if tokens > 0:
            self._tokens.append(tokens)
        return verdict

    # -- comparisons -----------------------------------------------------------------

    def _same(self, step: _Step, index: int) -> bool:
        """Same signature: same check fingerprint and near-identical output."""
        return step.fingerprint == self._recent[index].fingerprint and self._similar_output(
            step, index
        )

    def _similar_output(self, step: _Step, index: int) -> bool:
        ratio = self._similarity(step, index)
        return ratio is not None and ratio >= self._spec.similarity

    def _similarity(self, step: _Step, index: int) -> float | None:
        """Ratio of `step`'s output to a recent one's; None when there is none."""
        if len(self._recent) < -index:
            return None
        return _ratio(step.output, self._recent[index].output, self._spec.similarity)


def _fires(streak: int, threshold: int) -> bool:
    return threshold > 0 and streak >= threshold and streak % threshold == 0


def _normalise(output: str) -> tuple[str, ...]:
    """Words of the output with digits folded, its first and last COMPARE_CHARS only.

    Words, not characters, are compared: character-level SequenceMatcher on prose is
    slow (few distinct symbols) and rates unrelated texts as similar.
    """
    text = _WHITESPACE.sub(" ", _DIGITS.sub("0", output)).strip()
    if len(text) > 2 * COMPARE_CHARS:
        text = text[:COMPARE_CHARS] + " " + text[-COMPARE_CHARS:]
    return tuple(text.split())


def _ratio(a: tuple[str, ...], b: tuple[str, ...], threshold: float) -> float:
    """SequenceMatcher ratio, skipping the full comparison when a bound rules it out."""
    if a == b:
        return 1.0
    from difflib import SequenceMatcher  # here: most runs never compare two outputs

    matcher = SequenceMatcher(None, a, b, autojunk=False)
    for bound in (matcher.real_quick_ratio, matcher.quick_ratio):
        value = bound()
        if value < threshold:
            return value
    return matcher.ratio()


def _median(values: deque[float] | deque[int]) -> float | None:
    if len(values) < 3:
        return None
    return float(_statistics_median(values))


def _usd(amount: float) -> str:
    return f"${amount:.2f}" if amount >= 0.1 else f"${amount:.4f}".rstrip("0")


def _clip(line: str) -> str:
    return line if len(line) <= _MAX_EVIDENCE else line[: _MAX_EVIDENCE - 1] + "…"


def _statistics_median(values: Sequence[float]) -> Any:
    """`statistics.median` (imported when first needed: it costs every start ~3 ms)."""
    import statistics

    return statistics.median(values)
