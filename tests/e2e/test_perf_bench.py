"""The benchmarks' own machinery measures what it says (untimed: no speed target here).

The figures in benchmarks/ are only worth something if the measurement is right: a
supervisor's CPU must exclude its agents' (they are children), bystander processes
must never outlive a benchmark, and the resume benchmark must really resume a
journal cut by kill -9. Speed and memory targets live in benchmarks/, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import REPO

BENCH = REPO / "benchmarks"
sys.path.append(str(BENCH))  # appended: its script names never shadow a module

import _common  # noqa: E402  (benchmarks/ is not a package: scripts import it by path)


def test_measure_counts_the_process_not_its_children(tmp_path: Path) -> None:
    """A parent that only waits for a child burning 0.5 s of CPU spent far less itself."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import subprocess, sys\n"
        "burn = 'import time\\nwhile time.process_time() < 0.5: pass\\n'\n"
        "subprocess.run([sys.executable, '-c', burn], check=True)\n"
    )
    result = _common.measure([str(script)], tmp_path, ok_codes=(0,))
    assert result["exit_code"] == 0
    assert result["cpu_s"] < 0.35, result  # the child's 0.5 s is not the parent's
    assert result["peak_rss_mb"] > 0


def test_measure_names_a_failing_run(tmp_path: Path) -> None:
    script = tmp_path / "fails.py"
    script.write_text("import sys\nprint('boom', file=sys.stderr)\nsys.exit(3)\n")
    with pytest.raises(_common.BenchError, match="exited 3: boom"):
        _common.measure([str(script)], tmp_path, ok_codes=(0,))


def test_bystanders_are_killed_and_reaped() -> None:
    before = {p.pid for p in psutil.Process().children()}
    with _common.bystanders(5):
        during = {p.pid for p in psutil.Process().children()} - before
        assert len(during) == 5
    assert not any(psutil.pid_exists(pid) for pid in during)


def test_metric_ratio_and_slope() -> None:
    assert _common.metric("x", 3.0, "s", baseline=1.5)["ratio"] == 2.0
    assert _common.metric("x", 3.0, "s", baseline=0.0)["ratio"] is None
    assert _common.slope([1, 2, 3], [10, 20, 30]) == pytest.approx(10.0)


def run_bench(*argv: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(BENCH / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    doc: dict[str, Any] = json.loads(done.stdout)
    for m in doc["metrics"]:
        assert {"name", "value", "unit"} <= m.keys()
    return doc


def test_resume_benchmark_resumes_a_killed_run() -> None:
    """Small: 20 loops cut by kill -9 are all running again under the same run."""
    saved = _common.RESULTS / "resume.json"
    before = saved.read_bytes() if saved.exists() else None
    doc = run_bench("resume.py", "--loops", "20", "--repeat", "1")
    run = doc["details"]["runs"][0]
    assert run["resumed_flag"] is True
    assert 0 < run["to_run_started_s"] <= run["to_all_running_s"]
    assert (saved.read_bytes() if saved.exists() else None) == before  # not the default plan
