"""The suite's own guard: a test that leaves a process running fails itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
from helpers import TESTS

LEAKY = """
import subprocess

def test_leaks() -> None:
    subprocess.Popen(["sleep", "300"], start_new_session=True)

def test_cleans_up() -> None:
    with subprocess.Popen(["sleep", "0"]) as proc:
        proc.wait()
"""


def test_a_test_that_leaks_a_process_fails_and_the_process_is_killed(tmp_path: Path) -> None:
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")  # it imports support modules
    (tmp_path / "test_leaky.py").write_text(LEAKY)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "-W",
            "ignore::ResourceWarning",
            "-o",
            "addopts=",
            "test_leaky.py",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(TESTS), "LOOPVISOR_TEST_LEAK_GRACE": "0.5"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2 passed, 1 error" in proc.stdout, proc.stdout
    assert "the test left processes running" in proc.stdout
    assert "sleep 300" in proc.stdout
    pid = int(proc.stdout.split("Failed: the test left processes running: ")[1].split()[0])
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
