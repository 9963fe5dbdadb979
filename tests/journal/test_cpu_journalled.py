"""Issue 11, item 10: the CPU gauge and the loops' CPU agree, and survive a resume.

The defect: a check's CPU time was charged to the in-memory ledgers only, never
journalled, so the console's CPU gauge (2 s) and the loops' CPU read from the journal
(1.17 s) disagreed, and a resumed run forgot what its checks had burnt.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import PY, load, loop, sim_agent, supervisor_table

from supervisor.durable import durable_supervisor
from supervisor.journal.reader import JournalReader

pytestmark = pytest.mark.anyio

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"


async def test_check_cpu_is_journalled_like_agent_cpu(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    config = load(
        tmp_path,
        supervisor_table(),
        sim_agent("s", converge_after=2, files={"done.txt": "ok"}),
        loop(
            "L",
            "s",
            workspace="w",
            max_iterations=3,
            checks=[
                {
                    "name": "burn",
                    "run": [
                        PY,
                        "-c",
                        BURN + "import os, sys; sys.exit(not os.path.exists('done.txt'))",
                    ],
                }
            ],
        ),
    )
    async with durable_supervisor(config, exit_when_idle=True) as sup:
        summary = await sup.run()
        in_memory = sup.ledger.statistics().cpu_spent
    assert summary.loops[0].state == "succeeded"
    assert in_memory >= 0.2  # two checks of 0.3 s each (the sampler may miss the last slice)
    with JournalReader(config.supervisor.state_dir) as reader:
        journalled = sum(row.cpu_s for row in reader.status())
    assert journalled == pytest.approx(in_memory, abs=0.01)
