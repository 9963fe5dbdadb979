"""Issue 11, item 10: `history` totals are what the loop was charged, step-in chat included.

The defect: history's total summed the iterations only (3,350 tokens) while status,
from the ledger, said 3.9k: the operator's step-in chat turns were charged but
missing from the history.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from helpers import load, loop, run_cli, sim_agent, supervisor_table, wait_for

from supervisor.durable import durable_supervisor

pytestmark = pytest.mark.anyio


async def test_history_total_includes_step_in_chat(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("s", rate=2000, reply_tokens=40, converge_after=99),
        loop(
            "L", "s", workspace="w", done_marker="NEVER", max_iterations=2, stuck={"same_output": 0}
        ),
    )
    state = config.supervisor.state_dir
    async with (
        durable_supervisor(config, exit_when_idle=False) as sup,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(sup.run)
        await wait_for(lambda: sup.runners["L"].iteration >= 1)
        await sup.step_in("L")
        assert (await sup.chat("L", "what are you stuck on?")).strip()
        await sup.hand_back("L")
        await wait_for(lambda: sup.runners["L"].finished, timeout=20)
        charged = sup.runners["L"].ledger.tokens_spent
        await sup.shutdown()
    text = run_cli("history", "L", "--state-dir", state, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    total_line = next(x for x in text.stdout.splitlines() if x.strip().startswith("total"))
    assert f"{charged:,}" in total_line, text.stdout
    assert "step-in chat" in text.stdout
    data = json.loads(run_cli("history", "L", "--json", "--state-dir", state, cwd=tmp_path).stdout)
    assert data["total"]["tokens"] == charged
    assert sum(i["tokens"] for i in data["iterations"]) < charged
