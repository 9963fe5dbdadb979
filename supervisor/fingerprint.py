"""A failing check's fingerprint: what the stuck detector compares between iterations.

It ignores what changes without the failure changing: timings, addresses, temporary
paths and line numbers (an agent's edit moves lines without fixing anything). The
failing test ids when the output names them, else the first error line, else the
normalised tail of the output.
"""

from __future__ import annotations

import functools
import hashlib
import re

from supervisor.lazyre import lazy
from supervisor.testcounts import ANSI

_MAX_EVIDENCE_IDS = 3
_MAX_LINE = 200
_FALLBACK_LINES = 20
_Substitutions = tuple[tuple[re.Pattern[str], str], ...]


@functools.cache
def _volatile() -> _Substitutions:
    """Text that differs between runs of the same failure, even inside test ids.
    Compiled at the first fingerprint, as `lazyre`'s patterns (tempfile with it)."""
    import tempfile

    tmp = re.escape(tempfile.gettempdir().rstrip("/")) or "/tmp"
    return (
        (re.compile(r"0x[0-9a-fA-F]+"), "0x?"),
        # Addresses and hashes without 0x, as in pytest's elided reprs ("obje...7f3a2c1d9e80>").
        (re.compile(r"\b(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b"), "<hex>"),
        (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?"), "<ts>"),
        (re.compile(r"\b\d\d:\d\d:\d\d(?:[.,]\d+)?\b"), "<time>"),
        (
            re.compile(
                rf"(?:/private)?(?:/tmp|/var/tmp|/var/folders|{tmp})/(?:[^\s'\":/]+/)*([^\s'\":/]*)"
            ),
            r"<tmp>/\1",
        ),
        (re.compile(r"\bpytest-of-[^/\s]+/pytest-\d+\b"), "pytest-N"),
    )


@functools.cache
def _noise() -> _Substitutions:
    return (
        *_volatile(),
        (
            re.compile(r"\b\d+(?:\.\d+)?\s?(?:ms|us|µs|ns|s|sec|secs|seconds?|m\d+(?:\.\d+)?s)\b"),
            "<t>",
        ),
        (re.compile(r"\bline \d+\b"), "line N"),
        (re.compile(r"(\.\w+|\w):\d+(?::\d+)?(?=[:\s,)]|$)"), r"\1:N"),
        (re.compile(r"\[\s*\d+%\]"), "[N%]"),
        (re.compile(r"[ \t]+"), " "),
    )


@functools.cache
def _failed_ids() -> tuple[re.Pattern[str], ...]:
    return (
        re.compile(r"^(?:FAILED|ERROR) (?!\()(\S+)", re.MULTILINE),  # pytest short summary
        re.compile(r"^(\S+::\S+) (?:FAILED|ERROR)\b", re.MULTILINE),  # pytest -v
        re.compile(r"^\s*--- FAIL: (\S+)", re.MULTILINE),  # go test
        re.compile(r"^test (\S+) \.\.\. FAILED$", re.MULTILINE),  # cargo test
        re.compile(r"^\s*● (?!Test suite failed to run|Console)(.+?)\s*$", re.MULTILINE),  # jest
    )


_UNITTEST_FAIL = lazy(r"^(?:FAIL|ERROR): (\w+) \(([\w.]+)\)", re.MULTILINE)
_PYTEST_E = lazy(r"^E\s+(\S.*)$", re.MULTILINE)
_ERROR_LINE = lazy(
    r"^\s*(?:[\w.]*(?:Error|Exception|Failure|Interrupt)\b.*"
    r"|(?:panic|fatal|error)(?:\[\w+\])?:.*"
    r"|.*?\S:\d+(?::\d+)?:\s*(?:error|fatal error)\b.*"
    r"|\S+_test\.go:\d+: .*)$",
    re.MULTILINE,
)
_IGNORED_LINE = lazy(r"^(?:=+|-+|_+|\[\.\.\. output truncated \.\.\.\])?\s*$|^[=_-]{3,} ")


def failure_fingerprint(output: str) -> tuple[str, str]:
    """(fingerprint, evidence) of a failing run's output.

    Prefers the set of failing test ids plus the first assertion/error line; falls
    back to the last lines of output. Everything is normalised first, so that the
    same failure hashes the same across iterations.
    """
    text = ANSI().sub("", output)
    ids = _failing_ids(text)
    error = _first_error_line(text)
    if ids:
        material = ["ids", *sorted(ids), _normalise(error)]
        evidence = ", ".join(ids[:_MAX_EVIDENCE_IDS])
        if len(ids) > _MAX_EVIDENCE_IDS:
            evidence += f" +{len(ids) - _MAX_EVIDENCE_IDS} more"
    else:
        lines = [line.strip() for line in text.splitlines() if not _IGNORED_LINE().match(line)]
        lines = lines[-_FALLBACK_LINES:]
        material = ["tail", *map(_normalise, lines)]
        evidence = error or (lines[-1] if lines else "no output")
    return fingerprint_hash(*material), clip(evidence)


def _failing_ids(text: str) -> list[str]:
    found: list[tuple[int, str]] = []
    for pattern in _failed_ids():
        found.extend((m.start(), m[1]) for m in pattern.finditer(text))
    for m in _UNITTEST_FAIL().finditer(text):
        where = m[2] if m[2].endswith("." + m[1]) else f"{m[2]}.{m[1]}"
        found.append((m.start(), where))
    seen: dict[str, None] = {}
    for _, test_id in sorted(found):
        seen.setdefault(_normalise_id(test_id), None)
    return list(seen)


def _first_error_line(text: str) -> str:
    for pattern in (_PYTEST_E(), _ERROR_LINE()):
        m = pattern.search(text)
        if m is not None:
            return (m[1] if m.groups() else m[0]).strip()
    return ""


def _normalise(line: str) -> str:
    for pattern, replacement in _noise():
        line = pattern.sub(replacement, line)
    return line.strip()


def _normalise_id(test_id: str) -> str:
    """Test ids keep their digits (parameters); only addresses and temp dirs vary."""
    for pattern, replacement in _volatile():
        test_id = pattern.sub(replacement, test_id)
    return test_id


def fingerprint_hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def clip(line: str, limit: int = _MAX_LINE) -> str:
    return line if len(line) <= limit else line[: limit - 1] + "…"
