"""Stuck detectors fire exactly at their thresholds, name their evidence, and reset."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from supervisor.spec import StuckSpec
from supervisor.stuck import StuckDetector, StuckVerdict

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
]


class Feeder:
    """Feeds one iteration at a time, counting iterations; by default each output is
    different enough from the others that only the detector under test can fire."""

    def __init__(self, **spec: Any) -> None:
        self.detector = StuckDetector(StuckSpec(**spec))
        self.iteration = 0
        self._outputs = (f"attempt {w} " * 3 for w in _unique_words())

    def __call__(
        self,
        *,
        output: str | None = None,
        fp: str = "",
        evidence: str = "",
        passed: bool = False,
        usd: float = 0.0,
        tokens: int = 0,
    ) -> StuckVerdict | None:
        self.iteration += 1
        return self.detector.observe(
            iteration=self.iteration,
            output=next(self._outputs) if output is None else output,
            check_fingerprint=fp,
            check_evidence=evidence,
            checks_passed=passed,
            usd=usd,
            tokens=tokens,
        )


def _unique_words() -> itertools.chain[str]:
    return itertools.chain.from_iterable(
        ("".join(p) for p in itertools.product("abcdefghij", repeat=n)) for n in itertools.count(4)
    )


AUTH = "tests/test_auth.py::test_login"


# -- same_failure ------------------------------------------------------------------


def test_same_failure_fires_at_its_threshold_with_evidence() -> None:
    feed = Feeder(same_failure=4)
    assert [feed(fp="f1", evidence=AUTH) for _ in range(3)] == [None, None, None]
    assert feed(fp="f1", evidence=AUTH) == StuckVerdict(
        "same_failure", f"same check failure 4× — {AUTH}"
    )


def test_same_failure_fires_again_after_another_full_streak() -> None:
    feed = Feeder(same_failure=3)
    verdicts = [feed(fp="f1", evidence=AUTH) for _ in range(9)]
    fired = [i + 1 for i, v in enumerate(verdicts) if v is not None]
    assert fired == [3, 6, 9]
    assert verdicts[5] == StuckVerdict("same_failure", f"same check failure 6× — {AUTH}")


def test_same_failure_streak_resets_on_pass_or_different_failure() -> None:
    feed = Feeder(same_failure=3)
    assert feed(fp="f1") is None
    assert feed(fp="f1") is None
    assert feed(fp="", passed=True) is None  # a pass breaks the streak
    assert feed(fp="f1") is None
    assert feed(fp="f1") is None
    assert feed(fp="f2") is None  # a different failure breaks it too
    assert feed(fp="f2") is None
    assert feed(fp="f2") is not None


def test_passing_checks_never_count_as_same_failure() -> None:
    feed = Feeder(same_failure=2)
    # Even if a caller passes a stale fingerprint along with a pass.
    assert [feed(fp="f1", passed=True) for _ in range(5)] == [None] * 5


def test_same_failure_without_evidence_text() -> None:
    feed = Feeder(same_failure=2)
    feed(fp="f1")
    assert feed(fp="f1") == StuckVerdict("same_failure", "same check failure 2×")


def test_same_failure_disabled_by_zero() -> None:
    feed = Feeder(same_failure=0)
    assert [feed(fp="f1") for _ in range(10)] == [None] * 10


# -- same_output -------------------------------------------------------------------


def test_same_output_fires_at_its_threshold_ignoring_whitespace_and_digits() -> None:
    feed = Feeder(same_output=3)
    assert feed(output="Iteration 1: I could not fix the test.", passed=True) is None
    assert feed(output="Iteration 2:  I could not\nfix the test.", passed=True) is None
    assert feed(output="Iteration 3: I could not fix the test.\n", passed=True) == StuckVerdict(
        "same_output", "agent output 100% identical 3× in a row"
    )


def test_near_identical_output_reports_its_similarity() -> None:
    base = " ".join(WORDS * 3)  # 36 words
    once = base.replace("golf", "GOLF", 1)
    variants = [base, once, once.replace("kilo", "KILO", 1)]
    feed = Feeder(same_output=3, similarity=0.95)
    assert feed(output=variants[0]) is None
    assert feed(output=variants[1]) is None
    verdict = feed(output=variants[2])
    # One word of 36 changed each time: ratio 2*35/72 = 0.972.
    assert verdict == StuckVerdict("same_output", "agent output 97% identical 3× in a row")


def test_different_output_breaks_the_same_output_streak() -> None:
    feed = Feeder(same_output=3)
    assert feed(output="same text here") is None
    assert feed(output="same text here") is None
    assert feed(output="now something else entirely") is None
    assert feed(output="same text here") is None
    assert feed(output="same text here") is None
    assert feed(output="same text here") is not None


def test_output_below_similarity_is_not_the_same() -> None:
    base = " ".join(WORDS)  # 12 words; changing 2 gives 10/12 = 0.83
    feed = Feeder(same_output=2, similarity=0.9)
    assert feed(output=base) is None
    assert feed(output=base.replace("alpha", "x").replace("lima", "y")) is None


def test_empty_outputs_count_as_identical() -> None:
    feed = Feeder(same_output=3)
    assert feed(output="") is None
    assert feed(output="  \n") is None
    assert feed(output="") == StuckVerdict("same_output", "agent output empty 3× in a row")


def test_same_output_compares_long_outputs_quickly_by_their_ends() -> None:
    middle = " ".join(f"word{chr(97 + i % 26)}{i // 26}" for i in range(20_000))
    head, tail = "start " * 1000, " end" * 1000
    feed = Feeder(same_output=2)
    assert feed(output=head + middle + tail) is None
    # The middle differs completely, but only the first and last 4k characters count.
    assert feed(output=head + middle.upper() + tail) is not None


def test_same_output_disabled_by_zero() -> None:
    feed = Feeder(same_output=0)
    assert [feed(output="same") for _ in range(6)] == [None] * 6


# -- oscillation -------------------------------------------------------------------


def test_oscillation_fires_on_abab() -> None:
    feed = Feeder(same_output=0)
    assert feed(output="rewrite with a loop") is None
    assert feed(output="rewrite with recursion instead") is None
    assert feed(output="rewrite with a loop") is None
    assert feed(output="rewrite with recursion instead") == StuckVerdict(
        "oscillation", "outputs alternate A/B/A/B over iterations 1–4"
    )


def test_oscillation_does_not_fire_on_abcb() -> None:
    feed = Feeder(same_output=0)
    for output in ["plan a", "plan b", "plan c", "plan b"]:
        assert feed(output=f"{output} {output}") is None


def test_oscillation_of_check_failures_with_the_same_output() -> None:
    feed = Feeder(same_output=0, same_failure=0)
    assert feed(output="fixed it", fp="fa", evidence="test_a") is None
    assert feed(output="fixed it", fp="fb", evidence="test_b") is None
    assert feed(output="fixed it", fp="fa", evidence="test_a") is None
    assert feed(output="fixed it", fp="fb", evidence="test_b") == StuckVerdict(
        "oscillation", "check failures alternate A/B/A/B over iterations 1–4 (test_a / test_b)"
    )


def test_oscillation_starting_later_and_firing_again() -> None:
    feed = Feeder(same_output=0)
    assert feed(output="warm up first") is None
    verdicts = [feed(output="one way" if i % 2 else "the other way") for i in range(8)]
    fired = [(i + 2, v.evidence) for i, v in enumerate(verdicts) if v is not None]
    assert fired == [
        (5, "outputs alternate A/B/A/B over iterations 2–5"),
        (9, "outputs alternate A/B/A/B over iterations 2–9"),
    ]


def test_oscillation_disabled() -> None:
    feed = Feeder(same_output=0, oscillation=False)
    assert [feed(output="ab"[i % 2] * 3) for i in range(8)] == [None] * 8


# -- cost spike --------------------------------------------------------------------


def test_cost_spike_against_the_median_of_previous_iterations() -> None:
    feed = Feeder(cost_spike=5.0)
    assert [feed(usd=u) for u in (0.05, 0.06, 0.07)] == [None, None, None]
    assert feed(usd=0.30) is None  # 5× the median exactly is not above it
    assert feed(usd=0.52) == StuckVerdict(
        "cost_spike", "iteration cost $0.52 is 8.0× the median $0.065"
    )


def test_cost_spike_needs_three_previous_iterations() -> None:
    feed = Feeder(cost_spike=2.0)
    assert [feed(usd=u) for u in (0.05, 0.06, 5.0)] == [None, None, None]


def test_cost_spike_uses_tokens_when_no_usd_is_reported() -> None:
    feed = Feeder(cost_spike=5.0)
    for tokens in (1_000, 1_200, 1_100):
        assert feed(tokens=tokens) is None
    assert feed(tokens=20_000) == StuckVerdict(
        "cost_spike", "iteration used 20,000 tokens, 18.2× the median 1,100"
    )


def test_cost_spike_ignores_zero_median_and_tiny_amounts() -> None:
    feed = Feeder(cost_spike=2.0)
    assert [feed() for _ in range(3)] == [None] * 3
    assert feed(usd=1.0, tokens=50_000) is None  # median of nothing spent is 0
    tiny = Feeder(cost_spike=2.0)
    assert [tiny(usd=0.0001, tokens=10) for _ in range(3)] == [None] * 3
    assert tiny(usd=0.005, tokens=500) is None  # 50× but below a cent


def test_cost_spike_disabled_by_none() -> None:
    feed = Feeder(cost_spike=None)
    assert [feed(usd=u) for u in (0.01, 0.01, 0.01, 10.0)] == [None] * 4


# -- the rest ----------------------------------------------------------------------


def test_stall_verdict_names_the_silence() -> None:
    detector = StuckDetector(StuckSpec())
    assert detector.stall(120.0) == StuckVerdict("stall", "no output for 2m")
    assert detector.stall(95.4) == StuckVerdict("stall", "no output for 1m35s")


def test_first_detector_wins_when_several_fire_at_once() -> None:
    feed = Feeder(same_failure=3, same_output=3)
    assert feed(output="same", fp="f1", evidence=AUTH) is None
    assert feed(output="same", fp="f1", evidence=AUTH) is None
    verdict = feed(output="same", fp="f1", evidence=AUTH)
    assert verdict is not None
    assert verdict.detector == "same_failure"


def test_reset_forgets_history() -> None:
    feed = Feeder(same_failure=3, same_output=3, cost_spike=2.0)
    for _ in range(2):
        feed(output="same", fp="f1", usd=0.1)
    feed.detector.reset()
    assert feed(output="same", fp="f1", usd=0.1) is None
    assert feed.detector.statistics()["same_failure_streak"] == 1


@pytest.mark.parametrize("spec", [StuckSpec(), StuckSpec(same_failure=2, same_output=5)])
def test_statistics_report_streaks(spec: StuckSpec) -> None:
    detector = StuckDetector(spec)
    assert detector.statistics() == {
        "iterations": 0,
        "same_failure_streak": 0,
        "same_output_streak": 0,
        "alternating_run": 0,
        "median_usd": None,
        "median_tokens": None,
    }
    for n, usd in enumerate((0.01, 0.02, 0.03), start=1):
        detector.observe(
            iteration=n,
            output="same again",
            check_fingerprint="f1",
            check_evidence="",
            checks_passed=False,
            usd=usd,
            tokens=100 * n,
        )
    stats = detector.statistics()
    assert stats["iterations"] == 3
    assert stats["same_failure_streak"] == 3
    assert stats["same_output_streak"] == 3
    assert stats["alternating_run"] == 1
    assert stats["median_usd"] == pytest.approx(0.02)
    assert stats["median_tokens"] == 200
