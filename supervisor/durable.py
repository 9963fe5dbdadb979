"""A durable run: state-dir lock, journal, resume, and the journal writer task.

Every front-end that runs loops (headless `run`, the TUI, `serve`) goes through
`durable_supervisor`, so that all of them journal the same way, refuse a state
dir another live supervisor holds, and can resume after a crash.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from .journal import Journal
from .runtime import Supervisor
from .spec import Config
from .statelock import StateLock


class NothingToResume(Exception):
    """`--resume` found no unfinished run in the state dir."""


@asynccontextmanager
async def durable_supervisor(
    config: Config, *, resume: bool = False, exit_when_idle: bool = True
) -> AsyncIterator[Supervisor]:
    """Yield a journalled Supervisor (not yet running); record the run's end on exit.

    With `resume`, the newest unfinished run continues under its own run id: open
    reservations are settled from the journal first, loops keep their iteration
    numbers, budgets continue from what was spent, and a changed loops.toml is
    recorded and applies from each loop's next iteration.
    """
    state_dir = config.supervisor.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    with StateLock(state_dir):
        journal = Journal.open(state_dir)
        try:
            config_text = config.path.read_text(encoding="utf-8")
            if resume:
                run_id = journal.find_resumable_run()
                if run_id is None:
                    raise NothingToResume(f"nothing to resume: no unfinished run in {state_dir}")
                run_resume = journal.load_resume(run_id)
                supervisor = Supervisor(config, resume=run_resume, exit_when_idle=exit_when_idle)
                # Records the resume, and a changed loops.toml (which applies from each
                # loop's next iteration) as a notice in the journal.
                journal.mark_resumed(run_id, config_path=config.path, config_text=config_text)
            else:
                supervisor = Supervisor(config, exit_when_idle=exit_when_idle)
                journal.start_run(supervisor.run_id, config.path, config_text, loops=config.loops)
            supervisor.add_sink(journal.record)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(journal.run_writer)
                    try:
                        yield supervisor
                    finally:
                        tg.cancel_scope.cancel()
            finally:
                journal.finish_run(supervisor.run_id, supervisor.exit_code(), supervisor.end_reason)
        finally:
            journal.close()
