"""The shipped demo (top-level loops.toml + demo/), run headless on a copy."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from helpers import REPO, json_lines, run_cli

EXPECTED = {
    "fizzbuzz": "succeeded",
    "slugify": "succeeded",
    "parser": "stuck",
    "release-notes": "exhausted",
    "greeter": "succeeded",
}


def copy_demo(tmp_path: Path) -> Path:
    """The demo as a fresh clone has it: tracked files only (no earlier run's output)."""
    tracked = subprocess.run(
        ["git", "ls-files", "--", "loops.toml", "demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "loops.toml" in tracked
    for rel in tracked:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, tmp_path / rel)
    return tmp_path


def test_demo_runs_offline_to_its_expected_states(tmp_path: Path) -> None:
    before = subprocess.run(
        ["git", "status", "--porcelain", "--", "demo", "loops.toml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    work = copy_demo(tmp_path)
    started = time.monotonic()
    proc = run_cli("run", "loops.toml", "--headless", "--json", cwd=work, timeout=60)
    assert time.monotonic() - started < 60
    assert proc.returncode == 4, proc.stdout[-3000:] + proc.stderr
    records = json_lines(proc.stdout)
    summary = records[-1]
    assert summary["type"] == "summary"
    assert {r["name"]: r["state"] for r in summary["loops"]} == EXPECTED
    assert [r["name"] for r in summary["loops"]] == list(EXPECTED)  # run order
    reasons = {r["name"]: r["reason"] for r in summary["loops"]}
    assert reasons["parser"].startswith("same_failure")
    assert "release-notes" in reasons["release-notes"]
    assert "budget" in reasons["release-notes"]
    assert summary["tokens"] <= 60_000
    iterations = {r["name"]: r["iterations"] for r in summary["loops"]}
    assert iterations["fizzbuzz"] == 3
    assert iterations["slugify"] == 2
    assert iterations["greeter"] == 2
    # the converged loops' files really pass their tests now
    for name in ("fizzbuzz", "slugify"):
        check = subprocess.run(
            ["python3", "-m", "unittest", "-q"],
            cwd=work / "demo" / name,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert check.returncode == 0, check.stderr
    assert (work / "demo" / "greeter" / "greeting.txt").read_text() == "hello, world\n"
    # the repository's own copy is untouched
    after = subprocess.run(
        ["git", "status", "--porcelain", "--", "demo", "loops.toml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    assert after == before


def test_demo_passes_check(tmp_path: Path) -> None:
    work = copy_demo(tmp_path)
    proc = run_cli("check", "loops.toml", cwd=work)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == list(EXPECTED)
    assert lines[-1].startswith("loops.toml: ok, 5 loop(s)")
