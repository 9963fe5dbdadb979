"""The usage protocol end to end: `loopvisor run` charges a command agent's usage
lines, and `history` shows the bill without the lines themselves."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import loop, run_cli, supervisor_table, write_config
from usage_support import usage_agent, usage_line


def test_history_bills_what_the_agent_printed_and_hides_its_usage_lines(
    tmp_path: Path,
) -> None:
    lines = [
        usage_line(input_tokens=300, output_tokens=50, usd=0.01),
        "half way",
        usage_line(input_tokens=200, output_tokens=25, cache_read_input_tokens=100, usd=0.02),
        "DONE",
    ]
    config = write_config(
        tmp_path,
        supervisor_table(),
        usage_agent(lines),
        loop("metered", "metered", done_marker="DONE", max_iterations=1),
    )
    run = run_cli("run", config, "--headless", "--quiet", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    billed = json.loads(run_cli("history", "metered", "--json", cwd=tmp_path).stdout)
    assert billed["total"]["tokens"] == 675
    assert abs(billed["total"]["usd"] - 0.03) < 1e-9
    shown = run_cli("history", "metered", "--iteration", "1", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "half way" in shown.stdout
    assert "DONE" in shown.stdout
    assert "loopvisor_usage" not in shown.stdout
