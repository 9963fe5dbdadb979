"""Issue 11, item 8: the same failing check while the agent changes files is progress.

The filed case: a check whose failure prints nothing (`grep -q Usage DOCS.md`) was
declared "same check failure 3×" at iteration 3 of 6 while the agent rewrote
DOCS.md every iteration. A run whose agent changes nothing is still stuck at 3.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import (
    command_agent,
    load,
    loop,
    run_cli,
    run_recorded,
    supervisor_table,
    write_config,
)

from supervisor import events as ev
from supervisor.spec import Config

pytestmark = pytest.mark.anyio

# Appends a paragraph to DOCS.md each iteration (never the word the check wants) when
# EDIT is set in its argv; otherwise only talks.
AGENT = (
    "import os, sys\n"
    "n = os.environ['LOOPVISOR_ITERATION']\n"
    "if sys.argv[1] == 'edit':\n"
    "    with open('DOCS.md', 'a') as fh:\n"
    "        fh.write(f'Paragraph {n} of the docs.\\n')\n"
    "print('I improved the docs; the check should pass now.')\n"
)
CHECK = {"name": "docs", "run": "grep -q Usage DOCS.md"}


def _config(tmp_path: Path, mode: str, *, git: bool) -> Config:
    work = tmp_path / "w"
    work.mkdir()
    (work / "DOCS.md").write_text("# Docs\n")
    if git:
        for argv in (
            ["git", "init", "-q"],
            ["git", "add", "DOCS.md"],
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"],
        ):
            subprocess.run(argv, cwd=work, check=True)
    return load(
        tmp_path,
        supervisor_table(),
        command_agent("cli", AGENT, mode),
        loop("docs", "cli", workspace="w", checks=[CHECK], max_iterations=6),
    )


@pytest.mark.parametrize("git", [False, True], ids=["plain-dir", "git-repo"])
async def test_an_agent_that_changes_files_is_not_stuck(tmp_path: Path, git: bool) -> None:
    rec = await run_recorded(_config(tmp_path, "edit", git=git))
    assert rec.of(ev.StuckDetected, "docs") == []
    result = rec.result("docs")
    assert (result.state, result.iterations) == ("failed", 6), result


async def test_an_agent_that_changes_nothing_is_stuck_at_three(tmp_path: Path) -> None:
    rec = await run_recorded(_config(tmp_path, "talk", git=False))
    result = rec.result("docs")
    assert (result.state, result.iterations) == ("stuck", 3), result
    assert rec.of(ev.StuckDetected, "docs")[0].detector == "same_failure"


def test_the_journal_inside_the_workspace_is_not_progress(tmp_path: Path) -> None:
    """The state dir may lie inside the workspace (and inside its git work tree, not
    ignored): the journal it writes during every turn is not the agent's work."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "DOCS.md").write_text("# Docs\n")
    write_config(
        tmp_path,
        supervisor_table(),
        command_agent("cli", AGENT, "talk"),
        loop("docs", "cli", checks=[CHECK], max_iterations=6, on_stuck="stop"),
    )
    r = run_cli("run", "loops.toml", "--json", "--state-dir", "state", cwd=tmp_path)
    summary = json.loads(r.stdout.splitlines()[-1])
    (result,) = summary["loops"]
    assert (result["state"], result["iterations"]) == ("stopped", 3), result
    assert result["reason"].startswith("stuck: same_failure"), result
