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

import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from supervisor.childenv import configured_env
from supervisor.durations import format_duration
from supervisor.fingerprint import clip, failure_fingerprint, fingerprint_hash
from supervisor.process import CapturedRun, run_captured
from supervisor.score import read_score, show
from supervisor.spec import CheckSpec
from supervisor.testcounts import counts_text, parse_test_counts

OUTPUT_LIMIT = 16_000
"""Characters of output an outcome keeps (the tail, behind a truncation marker)."""
_PARSE_LIMIT = 64_000
"""Characters of output tail read for counts, guards and fingerprints."""


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
    score: float | None = None
    """A score check's number (`score.py`); None without one (then it failed)."""


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
    return _judge(spec, run, workspace)


def _judge(spec: CheckSpec, run: CapturedRun, workspace: Path) -> CheckOutcome:
    output = _strip_marker(run.output)
    passed_count, failed_count = parse_test_counts(output)
    reasons: list[str] = []
    if run.timed_out:
        reasons.append(f"timed out after {format_duration(spec.timeout)}")
    else:
        if run.exit_code != spec.expect_exit:
            reasons.append(_exit_text(run.exit_code, spec.expect_exit))
        reasons.extend(_guard_failures(spec, output, passed_count))
    score = None
    if spec.score is not None and not run.timed_out:
        score, no_score = read_score(spec.score, output, workspace)
        if score is None:
            reasons.append(no_score)
    failed = bool(reasons)
    counts = counts_text(passed_count, failed_count)
    parts = reasons if failed else [f"exit {run.exit_code}"]
    if score is not None:
        parts = [*parts, f"score {show(score)}"]
    summary = "; ".join([*parts, counts] if counts else parts)

    fingerprint = evidence = ""
    if run.timed_out:
        # The partial output of a hung run varies from one run to the next; the hang
        # itself is the failure.
        fingerprint, evidence = fingerprint_hash(spec.name, "timeout"), summary
    elif failed:
        fp, evidence = failure_fingerprint(output)
        fingerprint = fingerprint_hash(spec.name, *reasons, fp)
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
        score=score,
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
        fingerprint=fingerprint_hash(spec.name, "start", why),
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


def combined_failure(outcomes: Sequence[CheckOutcome]) -> tuple[str, str]:
    """(fingerprint, evidence) of all failing checks of one iteration, for the stuck
    detector: the same set of failures hashes the same; ("", "") when all passed."""
    failing = [o for o in outcomes if not o.passed]
    if not failing:
        return "", ""
    if len(failing) == 1:
        return failing[0].fingerprint, failing[0].evidence
    more = f" (+{len(failing) - 1} more failing)"
    return fingerprint_hash(*(o.fingerprint for o in failing)), clip(
        f"{failing[0].name}: {failing[0].evidence}{more}"
    )


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
