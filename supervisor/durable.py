"""A durable run: state-dir lock, journal, resume, and the journal writer task.

Every front-end that runs loops (headless `run`, the TUI, `serve`) goes through
`durable_supervisor`, so that all of them journal the same way, refuse a state
dir another live supervisor holds, and can resume after a crash.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from supervisor import cgroup, reaper
from supervisor.journal.history import JournalHistory
from supervisor.journal.statelock import StateLock
from supervisor.journal.writer import Journal
from supervisor.notify.channels import Children
from supervisor.notify.notifier import Notifier
from supervisor.process import KILL_GRACE_S
from supervisor.reaper import PROC_ENV, STATE_DIR_ENV, own_tag
from supervisor.runtime import Supervisor
from supervisor.spec import Config
from supervisor.statedir import ensure_state_dir


class NothingToResume(Exception):
    """`--resume` found no unfinished run in the state dir."""


def reap_orphans(state_dir: Path, grace: float = KILL_GRACE_S) -> list[tuple[int, str]]:
    """Kill what a dead supervisor of `state_dir` left running; returns (pid, tag) of
    each, the tag being its `reaper.PROC_ENV` (run/loop/iteration/kind), "" if none.

    Agents and checks run in process groups of their own, so a kill -9 of their
    supervisor leaves them running (still editing the workspace the resumed
    iteration works in), and so do the `setsid` children they started. Each carries
    `STATE_DIR_ENV`; call this holding the state dir's lock (no live supervisor of it
    exists then): each found process and its group get SIGTERM, then SIGKILL after
    `grace`. This process and its ancestors are spared.
    """
    tag = str(state_dir.resolve())
    killed = reaper.kill_tagged_sync(reaper.EnvMatch(STATE_DIR_ENV, tag), grace)
    seen = {pid for pid, _ in killed}
    # What hid from the marker (an emptied environment) but not from its cgroup.
    return killed + [(pid, "") for pid in cgroup.kill_leftovers(tag) if pid not in seen]


def _describe_reaped(reaped: list[tuple[int, str]]) -> str:
    """`(fizzbuzz iteration 3 turn): pid 12, 15`: what the processes belonged to
    (from their tags, in the order first seen), then their pids in order."""
    owners: dict[str, None] = {}
    for _pid, tag in reaped:
        fields = tag.partition("#")[0].split("/")
        if len(fields) == 4:
            _run, loop, iteration, kind = fields
            owners[f"{loop} iteration {iteration} {kind}"] = None
        elif len(fields) == 1 and ":" in fields[0]:  # `reaper.own_tag`: the run's own
            owners[fields[0].partition(":")[2]] = None
    pids = ", ".join(str(pid) for pid in sorted({pid for pid, _tag in reaped}))
    return f"({'; '.join(owners)}): pid {pids}" if owners else f": pid {pids}"


def _watch_space(journal: Journal, supervisor: Supervisor) -> None:
    """A full disk holds the loops, space resumes them, the grace period ends the run."""
    space = journal.space
    space.grace_s = supervisor.config.supervisor.disk_full_grace
    space.on_full = supervisor.journal_full
    space.on_space = supervisor.journal_writable
    space.on_give_up = supervisor.journal_gave_up


def _notifier(supervisor: Supervisor) -> Notifier | None:
    """The run's notifier, a bus sink like the journal (None: nothing configured).
    Its commands carry the run's tags: killed with the run, reaped after a crash."""
    config = supervisor.config
    if not Notifier.wanted(config):
        return None
    state_dir = config.supervisor.state_dir
    env = {
        STATE_DIR_ENV: str(state_dir.resolve()),
        PROC_ENV: own_tag(supervisor.run_id, "notify"),
    }
    notifier = Notifier(
        config,
        run_id=supervisor.run_id,
        notice=lambda message, level: supervisor.notice(message, level=level),
        children=Children(cwd=config.path.parent, env=env),
    )
    supervisor.add_sink(notifier.record)
    return notifier


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
                f" left running {_describe_reaped(reaped)}"
            )
        journal = Journal.open(state_dir)
        history = JournalHistory(state_dir)  # the handle's iterations() read it back
        try:
            config_text = (
                config.text if config.text is not None else config.path.read_text(encoding="utf-8")
            )
            if resume:
                run_id = journal.find_resumable_run()
                if run_id is None:
                    raise NothingToResume(f"nothing to resume: no unfinished run in {state_dir}")
                run_resume = journal.load_resume(run_id)
                supervisor = Supervisor(
                    config,
                    resume=run_resume,
                    exit_when_idle=exit_when_idle,
                    notes=notes,
                    history=history,
                )
                # Records the resume, and a changed loops.toml (which applies from each
                # loop's next iteration) as a notice in the journal.
                journal.mark_resumed(
                    run_id,
                    config_path=config.path,
                    config_text=supervisor.redactor.text(config_text),
                )
            else:
                supervisor = Supervisor(
                    config, exit_when_idle=exit_when_idle, notes=notes, history=history
                )
                journal.start_run(  # a secret written in loops.toml is not copied
                    supervisor.run_id,
                    config.path,
                    supervisor.redactor.text(config_text),
                    loops=[supervisor.redactor.fields(spec) for spec in config.loops],
                )
            supervisor.add_sink(journal.record)
            _watch_space(journal, supervisor)
            notifier = _notifier(supervisor)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(journal.run_writer)
                    if notifier is not None:
                        tg.start_soon(notifier.run)
                    try:
                        yield supervisor
                    finally:
                        if notifier is not None:  # the summary goes out before we exit
                            with anyio.CancelScope(shield=True):
                                await notifier.drain(notifier.drain_timeout())
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
