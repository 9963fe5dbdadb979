"""A check's `score` table (metric loops): read into `ScoreSpec`, and every mistake an
error at its own key's FILE:LINE:COL."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_support import assert_issue, issues_of, loop_config, where, write

from supervisor.config.load import load_config
from supervisor.spec import ScoreSpec


def scored(score: str, more: str = "") -> str:
    return loop_config(
        f"""\
        name = "tune"
        agent = "sim"
        prompt = "improve it: $score_history"
        checks = [{{ run = "python3 eval.py", score = {score} }}{more}]
        """
    )


def test_a_score_table_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        scored('{ pattern = "acc: ([0-9.]+)", direction = "min", target = 0.1, plateau = 4 }'),
    )
    config = load_config(path)
    (check,) = config.loops[0].checks
    expected = ScoreSpec(pattern="acc: ([0-9.]+)", direction="min", target=0.1, plateau=4)
    assert check.score == expected
    assert config.loops[0].score == check.score
    # No worktree: said once, as a warning (a worse iteration cannot be reverted).
    assert any("cannot be reverted" in w for w in config.warnings)
    path = write(tmp_path, scored('{ json = "out/m.json", key = "eval.acc" }'))
    (check,) = load_config(path).loops[0].checks
    assert check.score == ScoreSpec(json="out/m.json", key="eval.acc")


@pytest.mark.parametrize(
    ("score", "needle", "message"),
    [
        ('{ pattern = "acc: ([0-9.]+" }', "pattern =", "invalid regular expression"),
        ('{ pattern = "acc: [0-9.]+" }', "pattern =", "has no group: put the number in ( )"),
        ('{ pattern = "(x)", direction = "up" }', "direction", 'expected one of "max", "min"'),
        ('{ pattern = "(x)", target = "high" }', "target", "expected a number, got string"),
        ('{ pattern = "(x)", plateau = 2.5 }', "plateau", "expected an integer, got float"),
        ('{ pattern = "(x)", plateau = 0 }', "plateau", "must be greater than 0"),
        ('{ pattern = "(x)", json = "m.json" }', "json =", "use either pattern or json"),
        ('{ json = "m.json" }', "json", 'needs key = "NAME"'),
        ('{ json = "../m.json", key = "a" }', "json", "must be a path inside the workspace"),
        ('{ pattern = "(x)", key = "a" }', "key", "only with json"),
        ('{ pattern = "(x)", goal = 1 }', "goal", "unknown key checks[0].score.goal"),
        ("{ }", "score =", "says where the number is"),
        ('"accuracy"', "score =", "expected a table, got string"),
    ],
)
def test_each_score_mistake_is_an_error_at_its_key(
    tmp_path: Path, score: str, needle: str, message: str
) -> None:
    assert_issue(write(tmp_path, scored(score)), needle, message)


def test_only_one_check_may_have_a_score(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        scored('{ pattern = "(x)" }', ', { name = "b", run = "true", score = { pattern = "(y)" }}'),
    )
    (issue,) = issues_of(path)
    assert (issue.line, issue.col) == where(path, "checks")
    assert "only one check may have a score; python3, b do" in issue.message
