"""A check's `score` table: how a metric loop reads its number and when it is done.

    checks = [{ run = "python3 eval.py", score = { pattern = "accuracy: ([0-9.]+)",
                direction = "max", target = 0.95, plateau = 5 } }]

Either `pattern` (a regular expression with one group, searched in the check's
output: the last match counts) or `json` + `key` (a file the check wrote, relative
to the workspace; `key` dotted for nested objects). Every mistake is a FILE:LINE:COL
error of its own key, so `loopvisor check` catches it before anything runs.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from supervisor.config._schema import Table
from supervisor.spec import CheckSpec, ScoreSpec

SCORE_KEYS = frozenset({"pattern", "json", "key", "direction", "target", "plateau"})


def read_score(c: Table) -> ScoreSpec | None:
    """The check's `score`, or None (absent, or wrong: said as an error)."""
    if "score" not in c:
        return None
    t = c.table("score")
    if t is None:
        return None
    t.check_keys(SCORE_KEYS, "score")
    pattern = t.string("pattern", None, nonempty=True)
    json_path = t.string("json", None, nonempty=True)
    key = t.string("key", None, nonempty=True)
    ok = True
    if pattern is not None and json_path is not None:
        t.error("json", "use either pattern or json (with key), not both")
        ok = False
    elif pattern is None and json_path is None and "pattern" not in t and "json" not in t:
        t.issues.error(
            c.at("score"),
            f'{c.label}score: says where the number is: add pattern = "accuracy: ([0-9.]+)" '
            'or json = "FILE.json" with key = "accuracy"',
        )
        ok = False
    if pattern is not None and not _pattern_ok(t, pattern):
        ok = False
    if json_path is not None and pattern is None:
        if PurePosixPath(json_path).is_absolute() or ".." in PurePosixPath(json_path).parts:
            t.error("json", f'"{json_path}" must be a path inside the workspace')
            ok = False
        if key is None and "key" not in t:
            t.error("json", 'needs key = "NAME": the number to read from the file')
            ok = False
    elif key is not None and json_path is None:
        t.error("key", "only with json (the file the key is read from)")
        ok = False
    direction = t.choice("direction", ("max", "min"), "max")
    target = t.number("target", None)
    plateau = t.integer("plateau", None, positive=True)
    if not ok:  # (a wrong target or plateau is an error already: the config is refused)
        return None
    return ScoreSpec(
        pattern=pattern,
        json=json_path,
        key=key,
        direction=direction,  # type: ignore[arg-type]
        target=target,
        plateau=plateau,
    )


def _pattern_ok(t: Table, pattern: str) -> bool:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        t.error("pattern", f"invalid regular expression: {exc}")
        return False
    except (RecursionError, OverflowError):
        t.error("pattern", "invalid regular expression: nested too deeply")
        return False
    if compiled.groups < 1:
        t.error(
            "pattern", f'"{pattern}" has no group: put the number in ( ), like "score: ([0-9.]+)"'
        )
        return False
    return True


def check_scores(t: Table, checks: tuple[CheckSpec, ...], has_worktree: bool) -> None:
    """One score per loop; a warning when a worse iteration cannot be reverted."""
    scored = [c for c in checks if c.score is not None]
    if len(scored) > 1:
        t.error(
            "checks", f"only one check may have a score; {', '.join(c.name for c in scored)} do"
        )
    if scored and not has_worktree:
        t.issues.warn(
            t.at("checks"),
            f"checks: {scored[0].name} has a score but the loop has no git worktree: a worse"
            " iteration is not kept as best, but its changes cannot be reverted"
            ' (workspace = { repo = "." } reverts them)',
        )
