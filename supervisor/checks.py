"""Checks: validators the supervisor runs itself in a loop's workspace.

A check is written by the operator (`run` in loops.toml) and run by the supervisor,
never by the agent. Agent output is never interpolated into a command or handed to a
shell: agent text reaches a check only through the files the agent wrote in the
workspace (and the environment the operator configured). A `run` string goes to
`/bin/sh -c` exactly as the operator wrote it; a tuple is an argv run directly.

A check passes when its exit code is `expect_exit` and its guards hold: `min_passed`
(so that a run that collected zero tests, or printed nothing, is not a pass),
`pattern` (must match) and `not_pattern` (must not match). Guards see the last
`_PARSE_LIMIT` characters of output, which is also where counts and failure
fingerprints are read from; the outcome keeps only the last `OUTPUT_LIMIT`.

The failure fingerprint is what the stuck detector compares between iterations, so
it ignores what changes without the failure changing: timings, addresses, temporary
paths and line numbers (an agent's edit moves lines without fixing anything).
"""

from __future__ import annotations

import hashlib
import re
import signal
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from supervisor.childenv import configured_env
from supervisor.durations import format_duration
from supervisor.process import CapturedRun, run_captured
from supervisor.spec import CheckSpec

OUTPUT_LIMIT = 16_000
"""Characters of output an outcome keeps (the tail, behind a truncation marker)."""
_PARSE_LIMIT = 64_000
"""Characters of output tail read for counts, guards and fingerprints."""
_MAX_EVIDENCE_IDS = 3
_MAX_LINE = 200
_FALLBACK_LINES = 20


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """What one run of one check showed; `summary` says in one line why it passed or not."""

    name: str
    command: str
    """Display form of the command."""
    passed: bool
    exit_code: int | None
    """None when it timed out or could not start."""
    summary: str
    output: str
    """Combined stdout+stderr, tail-truncated to OUTPUT_LIMIT characters with a marker."""
    duration_s: float
    cpu_s: float
    passed_count: int | None
    failed_count: int | None
    fingerprint: str
    """Stable hash of the failure (empty when passed)."""
    evidence: str
    """What failed, for a person: failing test ids or the first error line."""


async def run_check(spec: CheckSpec, *, workspace: Path, env: Mapping[str, str]) -> CheckOutcome:
    """Run one check to completion or timeout; failures to start are outcomes, not errors."""
    argv = ["/bin/sh", "-c", spec.run] if isinstance(spec.run, str) else list(spec.run)
    if not argv:
        return _not_started(spec, "empty command")
    try:
        run = await run_captured(
            argv,
            cwd=workspace,
            env=configured_env(pass_env=spec.pass_env, env=spec.env, supervisor=env),
            timeout=spec.timeout,
            max_output=_PARSE_LIMIT,
        )
    except (OSError, ValueError) as exc:  # not found, not executable, no cwd, NUL in argv
        return _not_started(spec, _os_error_text(exc))
    return _judge(spec, run)


def _judge(spec: CheckSpec, run: CapturedRun) -> CheckOutcome:
    output = _strip_marker(run.output)
    passed_count, failed_count = parse_test_counts(output)
    reasons: list[str] = []
    if run.timed_out:
        reasons.append(f"timed out after {format_duration(spec.timeout)}")
    else:
        if run.exit_code != spec.expect_exit:
            reasons.append(_exit_text(run.exit_code, spec.expect_exit))
        reasons.extend(_guard_failures(spec, output, passed_count))
    failed = bool(reasons)
    counts = _counts_text(passed_count, failed_count)
    parts = reasons if failed else [f"exit {run.exit_code}"]
    summary = "; ".join([*parts, counts] if counts else parts)

    fingerprint = evidence = ""
    if run.timed_out:
        # The partial output of a hung run varies from one run to the next; the hang
        # itself is the failure.
        fingerprint, evidence = _hash(spec.name, "timeout"), summary
    elif failed:
        fp, evidence = failure_fingerprint(output)
        fingerprint = _hash(spec.name, *reasons, fp)
    return CheckOutcome(
        name=spec.name,
        command=spec.display,
        passed=not failed,
        exit_code=None if run.timed_out else run.exit_code,
        summary=summary,
        output=_tail(output, OUTPUT_LIMIT),
        duration_s=run.duration_s,
        cpu_s=run.cpu_s,
        passed_count=passed_count,
        failed_count=failed_count,
        fingerprint=fingerprint,
        evidence=evidence,
    )


def _guard_failures(spec: CheckSpec, output: str, passed: int | None) -> list[str]:
    reasons: list[str] = []
    if spec.min_passed is not None and (passed or 0) < spec.min_passed:
        reasons.append(f"only {passed or 0} tests passed (min_passed = {spec.min_passed})")
    for label, pattern, must_match in (
        ("pattern", spec.pattern, True),
        ("not_pattern", spec.not_pattern, False),
    ):
        if pattern is None:
            continue
        try:
            found = re.search(pattern, output, re.MULTILINE) is not None
        except re.error as exc:
            reasons.append(f"invalid {label} {pattern!r}: {exc}")
            continue
        if found != must_match:
            verb = "did not match" if must_match else "matched"
            reasons.append(f"output {verb} {label} {pattern!r}")
    return reasons


def _not_started(spec: CheckSpec, why: str) -> CheckOutcome:
    summary = f"could not start: {why}"
    return CheckOutcome(
        name=spec.name,
        command=spec.display,
        passed=False,
        exit_code=None,
        summary=summary,
        output="",
        duration_s=0.0,
        cpu_s=0.0,
        passed_count=None,
        failed_count=None,
        fingerprint=_hash(spec.name, "start", why),
        evidence=summary,
    )


def _os_error_text(exc: OSError | ValueError) -> str:
    if isinstance(exc, ValueError):
        return str(exc)
    if exc.strerror and exc.filename is not None:
        return f"{exc.strerror}: {exc.filename!r}"
    return exc.strerror or str(exc)


def _exit_text(code: int | None, expected: int) -> str:
    text = f"exit {code} (expected {expected})"
    if code is not None and code < 0:
        try:
            text += f"; killed by {signal.Signals(-code).name}"
        except ValueError:
            text += f"; killed by signal {-code}"
    elif code == 127:
        text += "; command not found"
    elif code == 126:
        text += "; command not executable"
    return text


# -- test counts ------------------------------------------------------------------

_PYTEST_SUMMARY = re.compile(
    r"^[= ]*(?P<body>(?:no tests ran|\d+ (?:passed|failed|errors?|skipped|deselected|"
    r"xfailed|xpassed|warnings?|rerun))(?:,? [^\n]*?)?) in \d+(?:\.\d+)?\s*s(?:econds)?\b",
    re.MULTILINE,
)
_PAIR = re.compile(r"(\d+) (passed|failed|errors?)\b")
_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in ", re.MULTILINE)
_UNITTEST_RESULT = re.compile(r"^(OK|FAILED|NO TESTS RAN)\b(?: \((.*)\))?\s*$", re.MULTILINE)
_GO_TEST = re.compile(r"^--- (PASS|FAIL): ", re.MULTILINE)
_GO_PKG = re.compile(r"^(ok|FAIL)[ ]*\t\S+(?:\t(.*))?$", re.MULTILINE)
_JEST = re.compile(r"^\s*Tests:\s+(.*?\d+ total)", re.MULTILINE)
_VITEST = re.compile(r"^\s*Tests\s+(\d+ (?:passed|failed).*?)\(\d+\)", re.MULTILINE)
_CARGO = re.compile(r"^test result: \w+\. (\d+) passed; (\d+) failed", re.MULTILINE)


def parse_test_counts(output: str) -> tuple[int | None, int | None]:
    """(passed, failed) from pytest, unittest, go test, jest/vitest or cargo output.

    Each recognised summary adds to the totals (a shell string may run several
    suites); (None, None) when no summary is found. pytest errors and unittest
    errors count as failed. `go test` without -v prints only package lines: each
    `ok pkg` then counts as one passed test (a lower bound), `[no tests to run]` as none.
    """
    text = _ANSI.sub("", output)
    totals: list[tuple[int, int]] = []
    for m in _PYTEST_SUMMARY.finditer(text):
        totals.append(_sum_pairs(m["body"]))
    totals.extend(_unittest_counts(text))
    go = _go_counts(text)
    if go is not None:
        totals.append(go)
    for m in _JEST.finditer(text):
        totals.append(_sum_pairs(m[1]))
    for m in _VITEST.finditer(text):
        totals.append(_sum_pairs(m[1]))
    for m in _CARGO.finditer(text):
        totals.append((int(m[1]), int(m[2])))
    if not totals:
        return None, None
    return sum(p for p, _ in totals), sum(f for _, f in totals)


def _sum_pairs(body: str) -> tuple[int, int]:
    passed = failed = 0
    for count, word in _PAIR.findall(body):
        if word == "passed":
            passed += int(count)
        else:
            failed += int(count)
    return passed, failed


def _unittest_counts(text: str) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    for ran in _UNITTEST_RAN.finditer(text):
        result = _UNITTEST_RESULT.search(text, ran.end())
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
    tests = _GO_TEST.findall(text)
    if tests:
        return tests.count("PASS"), tests.count("FAIL")
    packages = [(m[1], m[2] or "") for m in _GO_PKG.finditer(text)]
    if not packages:
        return None
    passed = sum(1 for s, rest in packages if s == "ok" and "[no tests to run]" not in rest)
    failed = sum(1 for s, rest in packages if s == "FAIL" and "[build failed]" not in rest)
    return passed, failed + sum(1 for _, rest in packages if "[build failed]" in rest)


def _counts_text(passed: int | None, failed: int | None) -> str:
    if passed is None and failed is None:
        return ""
    if not passed and not failed:
        return "no tests ran"
    return ", ".join(f"{n} {word}" for n, word in ((failed, "failed"), (passed, "passed")) if n)


# -- fingerprints -----------------------------------------------------------------

_TMP = re.escape(tempfile.gettempdir().rstrip("/")) or "/tmp"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_VOLATILE: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"0x[0-9a-fA-F]+"), "0x?"),
    # Addresses and hashes without 0x, as in pytest's elided reprs ("obje...7f3a2c1d9e80>").
    (re.compile(r"\b(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b"), "<hex>"),
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?"), "<ts>"),
    (re.compile(r"\b\d\d:\d\d:\d\d(?:[.,]\d+)?\b"), "<time>"),
    (
        re.compile(
            rf"(?:/private)?(?:/tmp|/var/tmp|/var/folders|{_TMP})/(?:[^\s'\":/]+/)*([^\s'\":/]*)"
        ),
        r"<tmp>/\1",
    ),
    (re.compile(r"\bpytest-of-[^/\s]+/pytest-\d+\b"), "pytest-N"),
)
"""Text that differs between runs of the same failure, even inside test ids."""
_NOISE = (
    *_VOLATILE,
    (re.compile(r"\b\d+(?:\.\d+)?\s?(?:ms|us|µs|ns|s|sec|secs|seconds?|m\d+(?:\.\d+)?s)\b"), "<t>"),
    (re.compile(r"\bline \d+\b"), "line N"),
    (re.compile(r"(\.\w+|\w):\d+(?::\d+)?(?=[:\s,)]|$)"), r"\1:N"),
    (re.compile(r"\[\s*\d+%\]"), "[N%]"),
    (re.compile(r"[ \t]+"), " "),
)
_FAILED_IDS: tuple[re.Pattern[str], ...] = (
    re.compile(r"^(?:FAILED|ERROR) (?!\()(\S+)", re.MULTILINE),  # pytest short summary
    re.compile(r"^(\S+::\S+) (?:FAILED|ERROR)\b", re.MULTILINE),  # pytest -v
    re.compile(r"^\s*--- FAIL: (\S+)", re.MULTILINE),  # go test
    re.compile(r"^test (\S+) \.\.\. FAILED$", re.MULTILINE),  # cargo test
    re.compile(r"^\s*● (?!Test suite failed to run|Console)(.+?)\s*$", re.MULTILINE),  # jest
)
_UNITTEST_FAIL = re.compile(r"^(?:FAIL|ERROR): (\w+) \(([\w.]+)\)", re.MULTILINE)
_PYTEST_E = re.compile(r"^E\s+(\S.*)$", re.MULTILINE)
_ERROR_LINE = re.compile(
    r"^\s*(?:[\w.]*(?:Error|Exception|Failure|Interrupt)\b.*"
    r"|(?:panic|fatal|error)(?:\[\w+\])?:.*"
    r"|.*?\S:\d+(?::\d+)?:\s*(?:error|fatal error)\b.*"
    r"|\S+_test\.go:\d+: .*)$",
    re.MULTILINE,
)
_IGNORED_LINE = re.compile(r"^(?:=+|-+|_+|\[\.\.\. output truncated \.\.\.\])?\s*$|^[=_-]{3,} ")


def failure_fingerprint(output: str) -> tuple[str, str]:
    """(fingerprint, evidence) of a failing run's output.

    Prefers the set of failing test ids plus the first assertion/error line; falls
    back to the last lines of output. Everything is normalised first, so that the
    same failure hashes the same across iterations.
    """
    text = _ANSI.sub("", output)
    ids = _failing_ids(text)
    error = _first_error_line(text)
    if ids:
        material = ["ids", *sorted(ids), _normalise(error)]
        evidence = ", ".join(ids[:_MAX_EVIDENCE_IDS])
        if len(ids) > _MAX_EVIDENCE_IDS:
            evidence += f" +{len(ids) - _MAX_EVIDENCE_IDS} more"
    else:
        lines = [line.strip() for line in text.splitlines() if not _IGNORED_LINE.match(line)]
        lines = lines[-_FALLBACK_LINES:]
        material = ["tail", *map(_normalise, lines)]
        evidence = error or (lines[-1] if lines else "no output")
    return _hash(*material), _clip(evidence)


def combined_failure(outcomes: Sequence[CheckOutcome]) -> tuple[str, str]:
    """(fingerprint, evidence) of all failing checks of one iteration, for the stuck
    detector: the same set of failures hashes the same; ("", "") when all passed."""
    failing = [o for o in outcomes if not o.passed]
    if not failing:
        return "", ""
    if len(failing) == 1:
        return failing[0].fingerprint, failing[0].evidence
    more = f" (+{len(failing) - 1} more failing)"
    return _hash(*(o.fingerprint for o in failing)), _clip(
        f"{failing[0].name}: {failing[0].evidence}{more}"
    )


def _failing_ids(text: str) -> list[str]:
    found: list[tuple[int, str]] = []
    for pattern in _FAILED_IDS:
        found.extend((m.start(), m[1]) for m in pattern.finditer(text))
    for m in _UNITTEST_FAIL.finditer(text):
        where = m[2] if m[2].endswith("." + m[1]) else f"{m[2]}.{m[1]}"
        found.append((m.start(), where))
    seen: dict[str, None] = {}
    for _, test_id in sorted(found):
        seen.setdefault(_normalise_id(test_id), None)
    return list(seen)


def _first_error_line(text: str) -> str:
    for pattern in (_PYTEST_E, _ERROR_LINE):
        m = pattern.search(text)
        if m is not None:
            return (m[1] if m.groups() else m[0]).strip()
    return ""


def _normalise(line: str) -> str:
    for pattern, replacement in _NOISE:
        line = pattern.sub(replacement, line)
    return line.strip()


def _normalise_id(test_id: str) -> str:
    """Test ids keep their digits (parameters); only addresses and temp dirs vary."""
    for pattern, replacement in _VOLATILE:
        test_id = pattern.sub(replacement, test_id)
    return test_id


def _hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _clip(line: str, limit: int = _MAX_LINE) -> str:
    return line if len(line) <= limit else line[: limit - 1] + "…"


# -- rendering --------------------------------------------------------------------

_MARKER = "[... output truncated ...]\n"
_OMITTED = "[output omitted]"
_RENDER_FLOOR = 200
"""Characters of output every check gets in `$check_output` before failures get more."""


def check_summary(results: Sequence[tuple[str, bool, str]]) -> tuple[str, bool]:
    """The loop's "last check" line from its last iteration's (name, passed, summary):
    "2/2 passed", or the first failing check's name and why. One place, so a resumed
    loop shows what the live one showed."""
    failing = next(((name, why) for name, passed, why in results if not passed), None)
    if failing is None:
        return f"{len(results)}/{len(results)} passed", True
    return f"{failing[0]}: {failing[1]}", False


def render_check_output(outcomes: Sequence[CheckOutcome], limit: int = 4000) -> str:
    """The `$check_output` text for the agent: per check a header line (name, verdict,
    summary) and its output tail, at most `limit` characters in all.

    Every check first gets up to `_RENDER_FLOOR` characters (so a short "All checks
    passed!" is not crowded out); the rest goes to failing checks, shared fairly (a
    short output leaves its unused share to the others), then to passing ones. Tails
    are kept, a cut is marked.
    """
    if not outcomes:
        return ""
    headers = [
        f"## {o.name}: {'passed' if o.passed else 'FAILED'} — {o.summary}\n" for o in outcomes
    ]
    bodies = [o.output.rstrip("\n") or "(no output)" for o in outcomes]
    budget = limit - sum(len(h) + 2 + len(_OMITTED) for h in headers)
    shares = [min(len(body), _RENDER_FLOOR) for body in bodies]
    if sum(shares) > budget:
        shares = [0] * len(bodies)
    budget -= sum(shares)
    for group in (
        [i for i, o in enumerate(outcomes) if not o.passed],
        [i for i, o in enumerate(outcomes) if o.passed],
    ):
        pending = sorted(group, key=lambda i: len(bodies[i]) - shares[i])
        while pending and budget > 0:
            i = pending.pop(0)
            extra = min(len(bodies[i]) - shares[i], budget // (len(pending) + 1))
            shares[i] += extra
            budget -= extra
    sections = [
        header + (_tail(body, share) if share >= min(len(body), 40) else _OMITTED)
        for header, body, share in zip(headers, bodies, shares, strict=True)
    ]
    text = "\n\n".join(sections)
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _strip_marker(output: str) -> str:
    return output.removeprefix(_MARKER)


def _tail(text: str, limit: int) -> str:
    """The end of `text` in at most `limit` characters, starting at a line if it can."""
    if len(text) <= limit:
        return text
    room = limit - len(_MARKER)
    if room <= 0:
        return _MARKER[:limit]
    tail = text[-room:]
    newline = tail.find("\n")
    if 0 <= newline < room // 2:
        tail = tail[newline + 1 :]
    return _MARKER + tail
