"""A durable run: state-dir lock, journal, resume, and the journal writer task.

Every front-end that runs loops (headless `run`, the TUI, `serve`) goes through
`durable_supervisor`, so that all of them journal the same way, refuse a state
dir another live supervisor holds, and can resume after a crash.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import psutil

from .journal import Journal
from .loop import STATE_DIR_ENV
from .process import KILL_GRACE_S, kill_group
from .runtime import Supervisor
from .spec import Config
from .statedir import ensure_state_dir
from .statelock import StateLock


class NothingToResume(Exception):
    """`--resume` found no unfinished run in the state dir."""


def reap_orphans(state_dir: Path, grace: float = KILL_GRACE_S) -> list[int]:
    """Kill what a dead supervisor of `state_dir` left running; returns those pids.

    Agents and checks run in process groups of their own, so a kill -9 of their
    supervisor leaves them running (still editing the workspace the resumed
    iteration works in). Each carries `STATE_DIR_ENV`; call this holding the state
    dir's lock (no live supervisor of it exists then) and their groups are killed:
    SIGTERM, then SIGKILL after `grace`. This process and its ancestors are spared.
    """
    tag = str(state_dir.resolve())
    me = psutil.Process()
    spared = {me.pid, *(p.pid for p in me.parents())}
    found: list[psutil.Process] = []
    for proc in psutil.process_iter():
        if proc.pid in spared:
            continue
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(STATE_DIR_ENV) == tag:
                found.append(proc)
    if not found:
        return []
    groups: set[int] = set()
    for proc in found:
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(proc.pid))
    groups.discard(os.getpgid(0))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            kill_group(pgid, sig)
        for proc in found:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        _, left = psutil.wait_procs(found, timeout=grace)
        if not left:
            break
    return sorted(p.pid for p in found)


def _watch_space(journal: Journal, supervisor: Supervisor) -> None:
    """A full disk holds the loops, space resumes them, the grace period ends the run."""
    space = journal.space
    space.grace_s = supervisor.config.supervisor.disk_full_grace
    space.on_full = supervisor.journal_full
    space.on_space = supervisor.journal_writable
    space.on_give_up = supervisor.journal_gave_up


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
    ensure_state_dir(state_dir)  # private, no links (statedir.py); StateDirError: exit 3
    with StateLock(state_dir):
        notes = []
        if reaped := reap_orphans(state_dir):
            notes.append(
                f"killed {len(reaped)} process(es) a stopped supervisor of {state_dir} had"
                f" left running: pid {', '.join(map(str, reaped))}"
            )
        journal = Journal.open(state_dir)
        try:
            config_text = config.path.read_text(encoding="utf-8")
            if resume:
                run_id = journal.find_resumable_run()
                if run_id is None:
                    raise NothingToResume(f"nothing to resume: no unfinished run in {state_dir}")
                run_resume = journal.load_resume(run_id)
                supervisor = Supervisor(
                    config, resume=run_resume, exit_when_idle=exit_when_idle, notes=notes
                )
                # Records the resume, and a changed loops.toml (which applies from each
                # loop's next iteration) as a notice in the journal.
                journal.mark_resumed(
                    run_id,
                    config_path=config.path,
                    config_text=supervisor.redactor.text(config_text),
                )
            else:
                supervisor = Supervisor(config, exit_when_idle=exit_when_idle, notes=notes)
                journal.start_run(  # a secret written in loops.toml is not copied
                    supervisor.run_id,
                    config.path,
                    supervisor.redactor.text(config_text),
                    loops=[supervisor.redactor.fields(spec) for spec in config.loops],
                )
            supervisor.add_sink(journal.record)
            _watch_space(journal, supervisor)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(journal.run_writer)
                    try:
                        yield supervisor
                    finally:
                        tg.cancel_scope.cancel()
            finally:
                journal.finish_run(
                    supervisor.run_id,
                    supervisor.exit_code(),
                    supervisor.end_reason,
                    ended=supervisor.ended_at,
                )
        finally:
            journal.close()
