"""Test counts read from a check's output: pytest, unittest, go test, jest/vitest
and cargo summaries, so that `min_passed` can tell a run that collected zero tests
from a pass, and a check's evidence can say "3 failed, 12 passed"."""

from __future__ import annotations

import re

from supervisor.lazyre import lazy

ANSI = lazy(r"\x1b\[[0-9;?]*[A-Za-z]")
"""Colour and cursor codes, stripped before a summary line is read."""
_PYTEST_SUMMARY = lazy(
    r"^[= ]*(?P<body>(?:no tests ran|\d+ (?:passed|failed|errors?|skipped|deselected|"
    r"xfailed|xpassed|warnings?|rerun))(?:,? [^\n]*?)?) in \d+(?:\.\d+)?\s*s(?:econds)?\b",
    re.MULTILINE,
)
_PAIR = lazy(r"(\d+) (passed|failed|errors?)\b")
_UNITTEST_RAN = lazy(r"^Ran (\d+) tests? in ", re.MULTILINE)
_UNITTEST_RESULT = lazy(r"^(OK|FAILED|NO TESTS RAN)\b(?: \((.*)\))?\s*$", re.MULTILINE)
_GO_TEST = lazy(r"^--- (PASS|FAIL): ", re.MULTILINE)
_GO_PKG = lazy(r"^(ok|FAIL)[ ]*\t\S+(?:\t(.*))?$", re.MULTILINE)
_JEST = lazy(r"^\s*Tests:\s+(.*?\d+ total)", re.MULTILINE)
_VITEST = lazy(r"^\s*Tests\s+(\d+ (?:passed|failed).*?)\(\d+\)", re.MULTILINE)
_CARGO = lazy(r"^test result: \w+\. (\d+) passed; (\d+) failed", re.MULTILINE)


def parse_test_counts(output: str) -> tuple[int | None, int | None]:
    """(passed, failed) from pytest, unittest, go test, jest/vitest or cargo output.

    Each recognised summary adds to the totals (a shell string may run several
    suites); (None, None) when no summary is found. pytest errors and unittest
    errors count as failed. `go test` without -v prints only package lines: each
    `ok pkg` then counts as one passed test (a lower bound), `[no tests to run]` as none.
    """
    text = ANSI().sub("", output)
    totals: list[tuple[int, int]] = []
    for m in _PYTEST_SUMMARY().finditer(text):
        totals.append(_sum_pairs(m["body"]))
    totals.extend(_unittest_counts(text))
    go = _go_counts(text)
    if go is not None:
        totals.append(go)
    for m in _JEST().finditer(text):
        totals.append(_sum_pairs(m[1]))
    for m in _VITEST().finditer(text):
        totals.append(_sum_pairs(m[1]))
    for m in _CARGO().finditer(text):
        totals.append((int(m[1]), int(m[2])))
    if not totals:
        return None, None
    return sum(p for p, _ in totals), sum(f for _, f in totals)


def _sum_pairs(body: str) -> tuple[int, int]:
    passed = failed = 0
    for count, word in _PAIR().findall(body):
        if word == "passed":
            passed += int(count)
        else:
            failed += int(count)
    return passed, failed


def _unittest_counts(text: str) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    for ran in _UNITTEST_RAN().finditer(text):
        result = _UNITTEST_RESULT().search(text, ran.end())
        if result is None:
            continue
        details = dict(
            (k.strip(), int(v))
            for k, v in (item.split("=", 1) for item in (result[2] or "").split(",") if "=" in item)
        )
        failed = (
            details.get("failures", 0)
            + details.get("errors", 0)
            + details.get("unexpected successes", 0)
        )
        not_run = details.get("skipped", 0) + details.get("expected failures", 0)
        found.append((max(int(ran[1]) - failed - not_run, 0), failed))
    return found


def _go_counts(text: str) -> tuple[int, int] | None:
    tests = _GO_TEST().findall(text)
    if tests:
        return tests.count("PASS"), tests.count("FAIL")
    packages = [(m[1], m[2] or "") for m in _GO_PKG().finditer(text)]
    if not packages:
        return None
    passed = sum(1 for s, rest in packages if s == "ok" and "[no tests to run]" not in rest)
    failed = sum(1 for s, rest in packages if s == "FAIL" and "[build failed]" not in rest)
    return passed, failed + sum(1 for _, rest in packages if "[build failed]" in rest)


def counts_text(passed: int | None, failed: int | None) -> str:
    if passed is None and failed is None:
        return ""
    if not passed and not failed:
        return "no tests ran"
    return ", ".join(f"{n} {word}" for n, word in ((failed, "failed"), (passed, "passed")) if n)
