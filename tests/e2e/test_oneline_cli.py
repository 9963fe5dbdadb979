"""`loopvisor run -p PROMPT --agent KIND --check CMD ...`: one loop without a loops.toml,
validated like a file, and `--print-config` printing a loops.toml that is the same run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import json_lines, run_cli

from supervisor.cli.main import build_parser
from supervisor.cli.oneline import one_line_config
from supervisor.config.load import load_config

PASS = f"{sys.executable} -c 'import sys; sys.exit(0)'"
FLAGS = [
    "-p",
    'make the "tests" pass\n$iteration',
    "--agent",
    "sim",
    "--check",
    PASS,
    "--check",
    "true",
    "--max-iterations",
    "3",
    "--usd",
    "5",
    "--tokens",
    "90000",
]


def test_a_one_line_loop_runs(tmp_path: Path) -> None:
    result = run_cli("run", *FLAGS, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json_lines(result.stdout)[-1]
    assert summary["type"] == "summary"
    assert [(r["name"], r["state"]) for r in summary["loops"]] == [("loop", "succeeded")]
    assert (tmp_path / ".loopvisor" / "journal.sqlite3").exists()  # status finds it there
    status = run_cli("status", cwd=tmp_path)
    assert "succeeded" in status.stdout


def test_print_config_loads_back_to_the_same_config(tmp_path: Path) -> None:
    printed = run_cli("run", *FLAGS, "--print-config", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert not (tmp_path / ".loopvisor").exists()  # printed, not run
    saved = tmp_path / "loops.toml"
    saved.write_text(printed.stdout, encoding="utf-8")
    from_file = load_config(saved)
    args = build_parser().parse_args(["run", *FLAGS])
    from_flags = one_line_config(args, tmp_path)
    assert from_flags.loops == from_file.loops
    assert from_flags.agents == from_file.agents
    assert from_flags.supervisor == from_file.supervisor
    (loop,) = from_file.loops
    assert (loop.max_iterations, loop.budget.limits.usd, loop.budget.limits.tokens) == (
        3,
        5.0,
        90000,
    )
    assert [c.display for c in loop.checks] == [PASS, "true"]
    assert loop.prompt == 'make the "tests" pass\n$iteration'


def test_worktree_flag_is_a_worktree_workspace(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    args = build_parser().parse_args(
        ["run", "-p", "x", "--agent", "sim", "--check", "true", "--worktree"]
    )
    (loop,) = one_line_config(args, tmp_path).loops
    assert loop.worktree is not None
    assert loop.worktree.repo == tmp_path.resolve()


def test_a_bad_flag_is_the_same_config_error(tmp_path: Path) -> None:
    result = run_cli("run", "-p", "x", "--agent", "simm", "--max-iterations", "0", cwd=tmp_path)
    assert result.returncode == 3
    lines = result.stderr.splitlines()
    assert any('got string "simm" (did you mean "sim"?)' in line for line in lines)
    assert any("max_iterations: must be greater than 0, got 0" in line for line in lines)
    assert any("has no exit condition: add checks or a done_marker" in line for line in lines)
    assert all(line.startswith(f"{tmp_path.resolve()}/loops.toml:") for line in lines)


def test_prompt_and_a_config_file_exclude_each_other(tmp_path: Path) -> None:
    result = run_cli("run", "other.toml", "-p", "x", "--check", "true", cwd=tmp_path)
    assert result.returncode == 3
    assert "give -p or a config" in result.stderr
