"""A reload compares loops.toml with the loops that came from it, not with every loop
of the run: a loop the run added (`ctl add`) or forked was never in the file, so it is
not reported as "no longer in loops.toml", and a loop the file now names like one of
them does not edit it (it would start only after a restart, which then does not
restore the added loop)."""

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

pytestmark = pytest.mark.anyio


def _parts(*more: str) -> list[str]:
    return [
        supervisor_table(),
        sim_agent("slow", rate=50, reply_tokens=20, converge_after=10_000),
        loop("roman", "slow", max_iterations=100, done_marker="NEVER", stuck={"same_output": 0}),
        *more,
    ]


async def test_reload_leaves_added_loops_alone(tmp_path: Path) -> None:
    gone = loop("gone", "slow", max_iterations=100, done_marker="NEVER", stuck={"same_output": 0})
    path = write_config(tmp_path, *_parts(gone))
    config = load_config(path, state_dir=tmp_path / ".state")
    reports = []

    async def during(rec: Recorded) -> None:
        sup = rec.supervisor
        await wait_for(lambda: sup.runners["roman"].state == "running")
        await sup.add("extra", like="roman", prompt="Added.", max_iterations=50)
        # `gone` left the file; `extra` was never in it.
        write_config(tmp_path, *_parts())
        reports.append(await reload_config(sup, path))
        # The file now has a loop named `extra`: not the added loop, which stays as added.
        write_config(
            tmp_path,
            *_parts(
                loop("extra", "slow", max_iterations=7, prompt="From the file.", done_marker="X")
            ),
        )
        reports.append(await reload_config(sup, path))
        extra = sup.runners["extra"].spec
        assert (extra.prompt, extra.max_iterations) == ("Added.", 50)
        await sup.stop()

    await run_recorded(config, exit_when_idle=False, during=during)
    first, second = reports
    assert [line for line in first.needs_restart if "no longer in" in line] == [
        "gone: no longer in loops.toml; keeps running until a restart of serve"
        " (`loopvisor ctl stop gone` stops it now)"
    ], first
    assert not any(line.startswith("extra") for line in first.needs_restart), first
    assert second.applied == (), second
    assert any(
        line.startswith("extra: new loop") and "added" in line for line in second.needs_restart
    ), second
