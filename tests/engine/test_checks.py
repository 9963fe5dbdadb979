"""Checks run for real: pytest, unittest and shell commands in a temporary workspace."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from supervisor.checks import (
    OUTPUT_LIMIT,
    CheckOutcome,
    combined_failure,
    render_check_output,
    run_check,
)
from supervisor.fingerprint import failure_fingerprint
from supervisor.spec import CheckSpec
from supervisor.testcounts import parse_test_counts

pytestmark = pytest.mark.anyio

PYTEST = (sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider")


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


async def check(workspace: Path, run: str | tuple[str, ...], **kw: Any) -> CheckOutcome:
    spec = CheckSpec(name="c", run=run, **kw)
    return await run_check(spec, workspace=workspace, env={})


# -- real runs ---------------------------------------------------------------------


async def test_pytest_failure_is_counted_and_names_the_failing_test(tmp_path: Path) -> None:
    write(
        tmp_path / "test_auth.py",
        """
        def test_ok():
            assert True

        def test_also_ok():
            assert True

        def test_login():
            assert "token" == "nope"
        """,
    )
    outcome = await check(tmp_path, PYTEST, min_passed=1)
    assert not outcome.passed
    assert outcome.exit_code == 1
    assert (outcome.passed_count, outcome.failed_count) == (2, 1)
    assert outcome.summary == "exit 1 (expected 0); 1 failed, 2 passed"
    assert outcome.evidence == "test_auth.py::test_login"
    assert outcome.fingerprint
    assert "test_login" in outcome.output
    assert outcome.command == " ".join(PYTEST)
    assert outcome.duration_s > 0


async def test_passing_pytest_run_passes_min_passed(tmp_path: Path) -> None:
    write(tmp_path / "test_ok.py", "def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    outcome = await check(tmp_path, PYTEST, min_passed=2)
    assert outcome.passed
    assert outcome.summary == "exit 0; 2 passed"
    assert (outcome.fingerprint, outcome.evidence) == ("", "")
    assert outcome.cpu_s > 0


async def test_zero_tests_collected_is_not_a_pass(tmp_path: Path) -> None:
    # pytest exits 5 when it collects nothing; even when that exit is accepted,
    # min_passed keeps an empty run from counting as a pass.
    outcome = await check(tmp_path, PYTEST, expect_exit=5, min_passed=1)
    assert not outcome.passed
    assert outcome.exit_code == 5
    assert (outcome.passed_count, outcome.failed_count) == (0, 0)
    assert outcome.summary == "only 0 tests passed (min_passed = 1); no tests ran"


async def test_check_that_prints_nothing_is_not_a_pass_with_min_passed(tmp_path: Path) -> None:
    outcome = await check(tmp_path, "true", min_passed=1)
    assert not outcome.passed
    assert outcome.summary == "only 0 tests passed (min_passed = 1)"
    assert (await check(tmp_path, "true")).passed


async def test_unittest_run_counts_failures_and_errors(tmp_path: Path) -> None:
    write(
        tmp_path / "test_units.py",
        """
        import unittest

        class Login(unittest.TestCase):
            def test_fine(self):
                pass

            def test_wrong(self):
                self.assertEqual(1, 2)

            def test_crash(self):
                raise ValueError("boom")
        """,
    )
    outcome = await check(tmp_path, (sys.executable, "-m", "unittest"), min_passed=1)
    assert not outcome.passed
    assert (outcome.passed_count, outcome.failed_count) == (1, 2)
    assert outcome.summary == "exit 1 (expected 0); 2 failed, 1 passed"
    assert "test_units.Login.test_wrong" in outcome.evidence
    assert "test_units.Login.test_crash" in outcome.evidence


async def test_shell_string_exit_codes_and_expect_exit(tmp_path: Path) -> None:
    failed = await check(tmp_path, "echo 'error: config missing' >&2; exit 2")
    assert not failed.passed
    assert failed.exit_code == 2
    assert failed.summary == "exit 2 (expected 0)"
    assert failed.evidence == "error: config missing"
    assert failed.fingerprint

    expected = await check(tmp_path, "exit 3", expect_exit=3)
    assert expected.passed
    assert expected.summary == "exit 3"

    zero_but_expected_one = await check(tmp_path, "true", expect_exit=1)
    assert not zero_but_expected_one.passed
    assert zero_but_expected_one.summary == "exit 0 (expected 1)"


async def test_check_runs_in_workspace_with_env(tmp_path: Path) -> None:
    spec = CheckSpec(name="env", run='printf "%s\\n" "$LOOPVISOR_TEST_VAR" | tr a-z A-Z; pwd')
    outcome = await run_check(spec, workspace=tmp_path, env={"LOOPVISOR_TEST_VAR": "hello"})
    assert outcome.passed
    assert outcome.output.splitlines() == ["HELLO", str(tmp_path)]


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    script = "sleep 60 & echo $! > bg.pid; echo $$ > sh.pid; echo started; sleep 60"
    started = time.monotonic()
    outcome = await check(tmp_path, script, timeout=1.0)
    assert time.monotonic() - started < 15
    assert not outcome.passed
    assert outcome.exit_code is None
    assert outcome.summary == "timed out after 1s"
    assert outcome.evidence == "timed out after 1s"
    assert "started" in outcome.output
    assert outcome.fingerprint
    for name in ("bg.pid", "sh.pid"):
        assert_gone(int((tmp_path / name).read_text()))


@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs setsid(1)")
async def test_timeout_kills_a_grandchild_that_left_the_group(tmp_path: Path) -> None:
    script = "setsid sleep 60 & echo $! > escaped.pid; sleep 60"
    outcome = await check(tmp_path, script, timeout=1.0)
    assert outcome.summary == "timed out after 1s"
    assert_gone(int((tmp_path / "escaped.pid").read_text()))


def assert_gone(pid: int, within: float = 5.0) -> None:
    """The process no longer exists (a zombie awaiting its reaper counts as gone)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    pytest.fail(f"process {pid} still running")


async def test_missing_command_is_a_failed_outcome(tmp_path: Path) -> None:
    argv = await check(tmp_path, ("loopvisor-no-such-command",))
    assert not argv.passed
    assert argv.exit_code is None
    assert argv.summary == "could not start: No such file or directory: 'loopvisor-no-such-command'"
    assert argv.fingerprint

    shell = await check(tmp_path, "loopvisor-no-such-command --flag")
    assert not shell.passed
    assert shell.exit_code == 127
    assert shell.summary == "exit 127 (expected 0); command not found"
    assert "loopvisor-no-such-command" in shell.evidence


async def test_nul_byte_in_argv_is_a_failed_outcome(tmp_path: Path) -> None:
    outcome = await check(tmp_path, ("echo", "a\0b"))
    assert not outcome.passed
    assert outcome.summary == "could not start: embedded null byte"


async def test_missing_workspace_is_a_failed_outcome(tmp_path: Path) -> None:
    outcome = await check(tmp_path / "gone", "true")
    assert not outcome.passed
    assert outcome.summary.startswith("could not start: No such file or directory")


async def test_pattern_and_not_pattern_guards(tmp_path: Path) -> None:
    run = "echo 'build ok'; echo '1 FAILED'"
    assert (await check(tmp_path, run, pattern=r"^build ok$")).passed

    missing = await check(tmp_path, run, pattern=r"^deployed$")
    assert not missing.passed
    assert missing.summary == "output did not match pattern '^deployed$'"

    matched = await check(tmp_path, run, not_pattern="FAILED")
    assert not matched.passed
    assert matched.summary == "output matched not_pattern 'FAILED'"
    assert matched.fingerprint != missing.fingerprint

    broken = await check(tmp_path, run, pattern="(")
    assert not broken.passed
    assert broken.summary.startswith("invalid pattern '(':")


async def test_long_output_keeps_its_tail(tmp_path: Path) -> None:
    code = "for i in range(5000): print(f'line {i:05d} ' + 'x' * 20)"
    outcome = await check(tmp_path, (sys.executable, "-c", code))
    assert outcome.passed
    assert len(outcome.output) <= OUTPUT_LIMIT
    lines = outcome.output.splitlines()
    assert lines[0] == "[... output truncated ...]"
    assert lines[1].startswith("line ")
    assert len(lines[1]) == len(lines[-1])
    assert lines[-1] == "line 04999 " + "x" * 20


async def test_same_failure_has_the_same_fingerprint_across_runs(tmp_path: Path) -> None:
    # Addresses, temp paths and timings differ between runs; the failure does not.
    write(
        tmp_path / "test_noise.py",
        """
        import time, random

        def test_addr(tmp_path):
            time.sleep(random.random() / 20)
            assert repr(object()) == str(tmp_path)
        """,
    )
    first = await check(tmp_path, PYTEST)
    second = await check(tmp_path, PYTEST)
    assert first.output != second.output
    assert first.fingerprint == second.fingerprint

    write(tmp_path / "test_noise.py", "def test_other():\n    assert 1 == 2\n")
    third = await check(tmp_path, PYTEST)
    assert third.fingerprint != first.fingerprint
    assert third.evidence == "test_noise.py::test_other"


# -- parsing -----------------------------------------------------------------------

GO_VERBOSE = """\
=== RUN   TestAdd
--- PASS: TestAdd (0.00s)
=== RUN   TestSub
    calc_test.go:14: got 1, want 2
--- FAIL: TestSub (0.00s)
=== RUN   TestTable
=== RUN   TestTable/a
    --- PASS: TestTable/a (0.00s)
--- PASS: TestTable (0.00s)
FAIL
FAIL\texample.com/calc\t0.004s
FAIL
"""

JEST = """\
FAIL src/auth.test.js
  ● login › rejects a bad password

    expect(received).toBe(expected) // Object.is equality

Test Suites: 1 failed, 2 passed, 3 total
Tests:       1 failed, 4 passed, 5 total
Snapshots:   0 total
Time:        1.234 s
"""


@pytest.mark.parametrize(
    ("output", "counts"),
    [
        ("3 failed, 5 passed in 0.12s", (5, 3)),
        ("==== 5 passed, 1 warning in 1.02s ====", (5, 0)),
        ("===== 1 failed, 2 passed, 1 error in 0.30s (0:00:00) =====", (2, 2)),
        ("==== 1 error in 0.10s ====", (0, 1)),
        ("no tests ran in 0.01s", (0, 0)),
        ("=== 2 passed in 0.01 seconds ===", (2, 0)),
        ("...\n" + "-" * 70 + "\nRan 5 tests in 0.001s\n\nOK\n", (5, 0)),
        ("Ran 5 tests in 0.002s\n\nFAILED (failures=2)\n", (3, 2)),
        ("Ran 6 tests in 0.002s\n\nFAILED (failures=1, errors=1, skipped=1)\n", (3, 2)),
        ("Ran 4 tests in 0.002s\n\nOK (skipped=1)\n", (3, 0)),
        ("Ran 0 tests in 0.000s\n\nNO TESTS RAN\n", (0, 0)),
        (GO_VERBOSE, (2, 1)),
        ("ok  \texample.com/a\t0.005s\nok  \texample.com/b\t(cached)\n", (2, 0)),
        ("ok  \texample.com/a\t0.005s [no tests to run]\n", (0, 0)),
        (
            "--- FAIL: TestX (0.01s)\nFAIL\texample.com/a\t0.01s\nok  \texample.com/b\t0.1s\n",
            (0, 1),
        ),
        (JEST, (4, 1)),
        ("      Tests  1 failed | 4 passed (5)\n   Start at  12:00:00\n", (4, 1)),
        ("test result: FAILED. 3 passed; 1 failed; 0 ignored", (3, 1)),
        ("5 passed in 0.1s\n...\n2 passed in 0.1s\n", (7, 0)),
        ("", (None, None)),
        ("compiled fine\nall good\n", (None, None)),
    ],
)
def test_parse_test_counts(output: str, counts: tuple[int | None, int | None]) -> None:
    assert parse_test_counts(output) == counts


PYTEST_FAIL = """\
F.                                                                       [ 50%]
=================================== FAILURES ===================================
__________________________________ test_login __________________________________

tmp_path = PosixPath('/tmp/pytest-of-me/pytest-{run}/test_login0')

    def test_login(tmp_path):
>       assert session() == "ok"
E       AssertionError: assert <Session object at 0x{addr}> == 'ok'

tests/test_auth.py:{line}: AssertionError
=========================== short test summary info ============================
FAILED tests/test_auth.py::{test} - AssertionError: assert <Session object at 0x{addr}>...
1 failed, 1 passed in {secs}s
"""


def pytest_failure(test: str = "test_login", **noise: object) -> str:
    values: dict[str, object] = {"run": 7, "addr": "7f3a2c1d9e80", "line": 12, "secs": "0.12"}
    return PYTEST_FAIL.format(test=test, **{**values, **noise})


def test_fingerprint_ignores_timings_addresses_temp_paths_and_line_numbers() -> None:
    base, evidence = failure_fingerprint(pytest_failure())
    noisy, _ = failure_fingerprint(
        pytest_failure(run=81, addr="55d0beefcafe", line=40, secs="13.70")
    )
    assert base == noisy
    assert evidence == "tests/test_auth.py::test_login"


def test_fingerprint_differs_for_another_test_or_assertion() -> None:
    base, _ = failure_fingerprint(pytest_failure())
    other_test, evidence = failure_fingerprint(pytest_failure(test="test_logout"))
    assert other_test != base
    assert evidence == "tests/test_auth.py::test_logout"
    other_message, _ = failure_fingerprint(pytest_failure().replace('== "ok"', '== "no"', 1))
    assert other_message == base  # the source line is not part of it...
    other_error, _ = failure_fingerprint(pytest_failure().replace("== 'ok'", "== 'no'", 1))
    assert other_error != base  # ...the assertion message is


def test_fingerprint_of_go_failure_includes_its_message() -> None:
    base, evidence = failure_fingerprint(GO_VERBOSE)
    assert evidence == "TestSub"
    moved, _ = failure_fingerprint(GO_VERBOSE.replace("calc_test.go:14", "calc_test.go:19"))
    assert moved == base
    other, _ = failure_fingerprint(GO_VERBOSE.replace("got 1, want 2", "got 3, want 2"))
    assert other != base


def test_fingerprint_evidence_lists_at_most_three_ids() -> None:
    output = "\n".join(f"--- FAIL: Test{n} (0.0{n}s)" for n in "ABCDE")
    _, evidence = failure_fingerprint(output)
    assert evidence == "TestA, TestB, TestC +2 more"


def test_fingerprint_of_unittest_output_names_tests() -> None:
    output = (
        "FAIL: test_wrong (pkg.test_mod.Login.test_wrong)\n"
        "Traceback (most recent call last):\n"
        '  File "/work/pkg/test_mod.py", line 9, in test_wrong\n'
        "AssertionError: 1 != 2\n"
    )
    _, evidence = failure_fingerprint(output)
    assert evidence == "pkg.test_mod.Login.test_wrong"


def test_fingerprint_without_test_ids_uses_error_line_and_tail() -> None:
    first, evidence = failure_fingerprint(
        "building...\nsrc/main.c:10:5: error: expected ';'\n1 error generated (0.52s)\n"
    )
    second, _ = failure_fingerprint(
        "building...\nsrc/main.c:12:5: error: expected ';'\n1 error generated (1.90s)\n"
    )
    other, _ = failure_fingerprint("building...\nsrc/main.c:10:5: error: unknown type\n")
    assert evidence == "src/main.c:10:5: error: expected ';'"
    assert first == second
    assert other != first
    assert failure_fingerprint("")[1] == "no output"


def test_combined_failure_of_several_checks() -> None:
    one, two = outcome("tests", False, ""), outcome("lint", False, "")
    one = dataclasses.replace(one, fingerprint="f1", evidence="test_a.py::test_x")
    two = dataclasses.replace(two, fingerprint="f2", evidence="E501 line too long")
    ok = outcome("types", True, "")
    assert combined_failure([ok]) == ("", "")
    assert combined_failure([one, ok]) == ("f1", "test_a.py::test_x")
    both, evidence = combined_failure([one, ok, two])
    assert evidence == "tests: test_a.py::test_x (+1 more failing)"
    assert both not in ("f1", "f2", "")
    assert combined_failure([one, two])[0] == both
    assert combined_failure([one, dataclasses.replace(two, fingerprint="f3")])[0] != both


# -- rendering ---------------------------------------------------------------------


def outcome(name: str, passed: bool, output: str) -> CheckOutcome:
    return CheckOutcome(
        name=name,
        command=name,
        passed=passed,
        exit_code=0 if passed else 1,
        summary="exit 0" if passed else "exit 1 (expected 0)",
        output=output,
        duration_s=0.1,
        cpu_s=0.05,
        passed_count=None,
        failed_count=None,
        fingerprint="" if passed else "f",
        evidence="",
    )


def test_render_check_output_keeps_tails_within_the_limit() -> None:
    long = "\n".join(f"log line {i}" for i in range(2000)) + "\nFINAL ERROR LINE"
    text = render_check_output(
        [outcome("tests", False, long), outcome("lint", True, "All checks passed!")],
        limit=1500,
    )
    assert len(text) <= 1500
    assert text.startswith("## tests: FAILED — exit 1 (expected 0)\n[... output truncated ...]")
    assert "FINAL ERROR LINE" in text
    assert "log line 0\n" not in text
    assert "## lint: passed — exit 0\nAll checks passed!" in text


def test_render_check_output_short_outputs_are_whole() -> None:
    text = render_check_output([outcome("a", False, "boom"), outcome("b", False, "")])
    assert text == (
        "## a: FAILED — exit 1 (expected 0)\nboom\n\n"
        "## b: FAILED — exit 1 (expected 0)\n(no output)"
    )
    assert render_check_output([]) == ""


def test_render_check_output_gives_failing_checks_the_budget_first() -> None:
    noise = "\n".join(f"passing detail {i}" for i in range(500))
    failure = "\n".join(f"failure detail {i}" for i in range(500))
    text = render_check_output(
        [outcome("ok", True, noise), outcome("bad", False, failure)], limit=2000
    )
    assert len(text) <= 2000
    assert "failure detail 499" in text
    assert text.count("failure detail") > 80
    assert 0 < text.count("passing detail") < 15  # a tail, for context
