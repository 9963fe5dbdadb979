"""`status --json` (read from the journal) shows a fork's own prompt when it was
given one (`loopvisor fork --prompt-file`), not its parent's."""

from __future__ import annotations

import anyio
import pytest
from gitrepo import make_repo
from helpers import load, loop, sim_agent, wait_for

from supervisor.api import ControlError
from supervisor.durable import durable_supervisor
from supervisor.journal.reader import JournalReader
from supervisor.runtime import Supervisor
from supervisor.worktree import prepare_worktrees


async def fork_once_journalled(sup: Supervisor) -> str:
    """Fork `fix` at 1 as soon as the journal (written in batches) has its outcome."""
    while True:
        try:
            return await sup.fork("fix", iteration=1, name="own", prompt="the fork's prompt")
        except ControlError as exc:
            if "still running" not in str(exc):
                raise
        await anyio.sleep(0.02)


@pytest.mark.anyio
async def test_status_json_shows_a_forks_own_prompt(tmp_path) -> None:  # type: ignore[no-untyped-def]
    make_repo(tmp_path / "repo")
    config = load(
        tmp_path,
        sim_agent("a", converge_after=1, files={"app.py": "fixed\n"}),
        loop(
            "fix",
            "a",
            prompt="the parent's prompt",
            workspace={"repo": "repo", "worktree": True},
            checks=[{"run": "grep -q fixed app.py"}],
        ),
    )
    prepare_worktrees(config)
    with anyio.fail_after(60):
        async with (
            durable_supervisor(config, exit_when_idle=False) as sup,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(sup.run)
            await wait_for(lambda: sup.runners["fix"].finished, timeout=30)
            await fork_once_journalled(sup)
            await wait_for(lambda: sup.runners["own"].finished, timeout=30)
            live = {lp.name: lp.prompt for lp in sup.snapshot_now().loops}
            await sup.shutdown()
    assert live["own"] == "the fork's prompt"
    with JournalReader(config.supervisor.state_dir) as reader:
        data = reader.status_json()
    prompts = {row["name"]: row["prompt"] for row in data["loops"]}
    assert prompts == {"fix": "the parent's prompt", "own": "the fork's prompt"}
