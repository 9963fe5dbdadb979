"""Issue 11, item 7: a reload applies what changed in the file, not the whole file.

The defect: `ctl reload` of an unchanged loops.toml undid the operator's edits
("applied: roman: max_iterations 4 → 5; budget usd 5.0 → None"). An operator edit
stays until the file changes that key, and the report says which edits were kept.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import (
    Recorded,
    loop,
    run_recorded,
    sim_agent,
    supervisor_table,
    wait_for,
    write_config,
)

from supervisor.config.load import load_config
from supervisor.control.reload import reload_config
from supervisor.spec import Limits

pytestmark = pytest.mark.anyio


def _parts(max_iterations: int, prompt: str = "Write roman numerals.") -> list[str]:
    return [
        supervisor_table(),
        sim_agent("slow", rate=50, reply_tokens=20, converge_after=10_000),
        loop(
            "roman",
            "slow",
            max_iterations=max_iterations,
            done_marker="NEVER",
            prompt=prompt,
            budget={"usd": 5.0},
            stuck={"same_output": 0},
        ),
    ]


async def test_reload_keeps_operator_edits_to_keys_the_file_did_not_change(
    tmp_path: Path,
) -> None:
    path = write_config(tmp_path, *_parts(max_iterations=100))
    config = load_config(path, state_dir=tmp_path / ".state")
    reports = []

    async def during(rec: Recorded) -> None:
        sup = rec.supervisor
        await wait_for(lambda: sup.runners["roman"].state == "running")
        await sup.edit("roman", max_iterations=500, limits=Limits(usd=9.0))
        # Nothing changed in the file: nothing is applied, both edits are kept.
        reports.append(await reload_config(sup, path))
        assert sup.runners["roman"].spec.max_iterations == 500
        assert sup.runners["roman"].spec.budget.limits.usd == 9.0
        # The file changes the prompt only: the prompt applies, the edits stay.
        write_config(tmp_path, *_parts(max_iterations=100, prompt="Write roman numerals well."))
        reports.append(await reload_config(sup, path))
        assert sup.runners["roman"].spec.prompt == "Write roman numerals well."
        assert sup.runners["roman"].spec.max_iterations == 500
        # The file changes max_iterations: the file wins for that key, usd stays edited.
        write_config(tmp_path, *_parts(max_iterations=42, prompt="Write roman numerals well."))
        reports.append(await reload_config(sup, path))
        assert sup.runners["roman"].spec.max_iterations == 42
        assert sup.runners["roman"].spec.budget.limits.usd == 9.0
        await sup.stop()

    await run_recorded(config, exit_when_idle=False, during=during)
    first, second, third = reports
    assert first.applied == ()
    assert any("max_iterations 500" in k and "kept" in k for k in first.kept), first
    assert any("usd 9.0" in k for k in first.kept), first
    assert second.applied == ("roman: prompt changed (from its next iteration)",)
    assert third.applied == ("roman: max_iterations 500 → 42 (from its next iteration)",)
    assert any("usd 9.0" in k for k in third.kept), third
