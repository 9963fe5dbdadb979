"""What a run is made of: its loops' runners, its ledgers and slots, its wall
deadline, and the one way an event is published.

`Supervisor` (runtime.py) is built on this: the constructor turns a `Config` (and a
`--resume`) into a `LoopRunner` per loop, each with its ledger under the global one,
the shared compute slots and the run's agent context; `_add_fork` builds a fork's
the same way, at start (a resumed run's forks) or from the `fork` op, and
`_add_added` a loop of the `add` op's. Kept apart from
the run's task group (runtime.py) and the control ops (runtime_ops.py) so that what
a runner is given is read in one place.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from supervisor import cpumeter, sweep
from supervisor import events as ev
from supervisor.agents.kind import AgentContext
from supervisor.agents.registry import build_agent, kind_of
from supervisor.budget import Charge, Ledger
from supervisor.budget_watch import BudgetWatch
from supervisor.bus import EventBus
from supervisor.diskfull import Gate
from supervisor.landing import Landing
from supervisor.loop import LoopRunner
from supervisor.newloops import origin as made_from
from supervisor.redact import Redactor
from supervisor.spec import Config, Limits, LoopSpec, edited
from supervisor.usagewait import AccountWaits
from supervisor.worktree import OverlapChecker

if TYPE_CHECKING:
    from supervisor.agents.ratelimit import RateLimiterRegistry
    from supervisor.journal.history import JournalHistory
    from supervisor.journal.resume import LoopResume, RunResume


class RunSetup:
    """The run's parts, built once; `Supervisor` runs them."""

    def __init__(
        self,
        config: Config,
        *,
        run_id: str | None = None,
        resume: RunResume | None = None,
        exit_when_idle: bool = True,
        notes: Sequence[str] = (),
        history: JournalHistory | None = None,
    ) -> None:
        self.config = config
        self.history = history
        """Where `iterations()` / `iteration()` read (the journal); None: no history."""
        self.file_loops: dict[str, LoopSpec] = {spec.name: spec for spec in config.loops}
        """Each loop as loops.toml last said it: a reload applies what the file changed
        since, so that an operator's edit stays until the file changes that key."""
        # 12 random hex digits, as uuid4().hex[:12] (whose import costs every start ~2 ms)
        self.run_id = run_id or (resume.run_id if resume else os.urandom(6).hex())
        self.resumed = resume is not None
        self.exit_when_idle = exit_when_idle
        self.redactor = Redactor.for_config(config)
        self.bus = EventBus(redact=self.redactor.fields)
        # The operator's last `budget` outlives a crash (`journal.edits`).
        limits = resume.limits if resume is not None and resume.limits is not None else None
        self.ledger = Ledger("global", limits or config.supervisor.budget)
        self.ledger.pause_when_exhausted = config.supervisor.on_exhausted == "pause"
        self.slots = anyio.CapacityLimiter(config.supervisor.max_concurrent)
        self.started_at = time.time()
        self._wall_before = resume.wall_s if resume else 0.0
        self._run_clock = 0.0
        self._wall_scope: anyio.CancelScope | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._meter: cpumeter.CpuMeter | None = None
        self._sweeper: sweep.Sweeper | None = None
        self._changed = anyio.Event()
        self.end_reason = ""
        self._global_exhausted = False
        self._interrupted = False
        self._finished = False
        self._ended_at: float | None = None
        """When the last loop ended (serve mode keeps running after that)."""
        self._summary: ev.RunFinished | None = None
        self._disk_full = False
        self.gate = Gate()
        """Closed while the journal's disk is full: loops start no turn (diskfull.py)."""
        self._limiters = self._make_limiters()
        self._budget_watch = BudgetWatch(self._publish)
        self._ctx = AgentContext(
            state_dir=config.supervisor.state_dir,
            pricing=dict(config.pricing),
            limiters=self._limiters,
            redactor=self.redactor,
        )
        self.landing = Landing(self.redactor)
        """Worktree setup, `on_success` and the `land` op; its records listen on the bus."""
        self.bus.add_sink(self.landing.records)
        overlap = OverlapChecker(
            list(config.loops),
            lambda loop, msg: self.notice(msg, level="warning", loop=loop),
        )
        self.accounts = AccountWaits()
        """Usage windows spent, per account: its loops wait for the reset together."""
        self.runners: dict[str, LoopRunner] = {}
        for spec in config.loops:
            loop_resume = resume.loops.get(spec.name) if resume else None
            self.runners[spec.name] = self._make_runner(
                spec, loop_resume, overlap.check if overlap.active else None
            )
        for runner in self.runners.values():  # a pipeline's loops wait for these
            runner.upstream = tuple(self.runners[n] for n in runner.spec.after if n in self.runners)
            name = runner.spec.name
            runner.attempts = tuple(r for r in self.runners.values() if r.spec.attempt_of == name)
        fork_notes = [] if resume is None else self._restore_forks(resume)
        self._notes = [*(resume.notes if resume else ()), *fork_notes, *notes]
        """Warnings published right after `RunStarted`."""

    def _wall_deadline(self) -> float:
        """When the global wall limit runs out, on the event loop's clock (inf: none);
        read again when the operator changes the limit (`budget`)."""
        wall = self.ledger.limits.wall
        return math.inf if wall is None else self._run_clock + wall

    def _make_runner(
        self,
        spec: LoopSpec,
        loop_resume: LoopResume | None,
        after_iteration: Callable[[str], Awaitable[None]] | None = None,
    ) -> LoopRunner:
        if loop_resume is not None and loop_resume.edit is not None:
            spec = with_edit(spec, loop_resume.edit)  # the operator's edits outlive a crash
        race = self.runners.get(spec.attempt_of) if spec.attempt_of else None
        parent = race.ledger if race is not None else self.ledger  # a race's limits: all
        ledger = Ledger(spec.name, spec.budget.limits, parent=parent)
        ledger.pause_when_exhausted = spec.on_exhausted == "pause"
        if loop_resume is not None:
            ledger.charge(
                Charge(tokens=loop_resume.tokens, usd=loop_resume.usd, cpu_s=loop_resume.cpu_s)
            )
        agent_spec = self.config.agent_for(spec)
        return LoopRunner(
            spec,
            agent_spec,
            build_agent(agent_spec, spec, self._ctx),
            ledger=ledger,
            slots=self.slots,
            publish=self._publish,
            pricing=dict(self.config.pricing),
            resume=loop_resume,
            after_iteration=after_iteration,
            state_dir=self.config.supervisor.state_dir.resolve(),
            redactor=self.redactor,
            output_cap=self.config.supervisor.max_output_per_iteration,
            gate=self.gate,
            run_id=self.run_id,
            worktree=self.landing if spec.worktree is not None else None,
            accounts=self.accounts,
        )

    def _add_fork(self, event: ev.LoopForked, loop_resume: LoopResume | None) -> LoopRunner:
        """The runner of a fork (`fork.py`), seeded from its parent's iteration unless
        it has a conversation of its own already (a resumed fork that ran)."""
        from supervisor.fork import fork_spec, seed_fork  # forks are rare: off run's path

        spec = fork_spec(self.runners[event.parent].spec, event)
        runner = self._make_runner(spec, loop_resume)
        runner.forked_from = event.label
        if loop_resume is None or loop_resume.next_iteration <= 1:
            seed_fork(runner, event)
        self.runners[spec.name] = runner
        return runner

    def _add_added(self, event: ev.LoopAdded, loop_resume: LoopResume | None) -> LoopRunner:
        """The runner of a loop the `add` op started (`added.py`), like its like-loop."""
        from supervisor.added import added_spec  # added loops are rare: off run's path

        spec = added_spec(self.runners[event.like].spec, event)
        runner = self._make_runner(spec, loop_resume)
        self.runners[spec.name] = runner
        return runner

    def _restore_forks(self, resume: RunResume) -> list[str]:
        """Rebuild the run's forks and added loops on `--resume`, in the order they were
        made; a line for each that cannot be."""
        notes = []
        for event in resume.forks:
            fork = isinstance(event, ev.LoopForked)
            origin = made_from(event)
            if event.loop in self.runners:
                what = "fork" if fork else "added loop"
                notes.append(
                    f"{event.loop}: a loop of that name is in the config; {what} not restored"
                )
            elif origin not in self.runners:
                how = (
                    f"forked from {event.label}"
                    if isinstance(event, ev.LoopForked)
                    else (f"added like {origin}")
                )
                notes.append(
                    f"{event.loop}: {how}, whose loop is gone from the config; not restored"
                )
            elif isinstance(event, ev.LoopForked):
                self._add_fork(event, resume.loops.get(event.loop))
            else:
                self._add_added(event, resume.loops.get(event.loop))
        return notes

    def _make_limiters(self) -> RateLimiterRegistry | None:
        if not any(kind_of(a).rate_limit_provider for a in self.config.agents.values()):
            return None
        from supervisor.agents.ratelimit import RateLimiterRegistry

        return RateLimiterRegistry(self.config.supervisor.rate_limits)

    def _publish(self, event: ev.Event) -> None:
        self.bus.publish(event)
        if isinstance(event, ev.UsageCharged | ev.CheckFinished):
            runner = self.runners.get(event.loop)
            if runner is not None:
                self._budget_watch.check(runner.ledger)
        elif isinstance(event, ev.ScheduledRun):
            self._budget_watch.reset(event.loop)
        if isinstance(event, ev.LoopStateChanged):
            self._changed.set()

    def notice(self, message: str, *, level: str = "info", loop: str | None = None) -> None:
        self._publish(ev.Notice(message=message, level=level, loop=loop))  # type: ignore[arg-type]


def with_edit(spec: LoopSpec, edit: ev.LoopEdited) -> LoopSpec:
    """`spec` with a journalled edit (`events.LoopEdited`) applied."""
    limits = None if edit.limits is None else Limits.from_dict(edit.limits)
    return edited(spec, prompt=edit.prompt, max_iterations=edit.max_iterations, limits=limits)
