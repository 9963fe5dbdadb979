"""The Supervisor: runs every loop of a config concurrently under one hard budget.

`Supervisor(config).run()` under anyio: one task group, one task per loop, a
CapacityLimiter for the compute slots, a global ledger every loop ledger draws
from. Front-ends use it through `api.SupervisorHandle` (snapshot, subscribe,
control operations). With `exit_when_idle` (headless `run`) the run ends as soon
as every unfinished loop waits for a person; `serve` keeps waiting instead.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from supervisor import cpumeter, reaper, sweep
from supervisor import events as ev
from supervisor.agents.base import ForksSessions
from supervisor.agents.kind import AgentContext
from supervisor.agents.registry import build_agent, kind_of
from supervisor.api import (
    BudgetSnapshot,
    ControlError,
    IterationDetail,
    IterationSummary,
    LoopDiff,
    RunSnapshot,
    StepIn,
)
from supervisor.budget import Charge, Ledger
from supervisor.budget_watch import BudgetWatch
from supervisor.bus import EventBus
from supervisor.config.load import describe_limits
from supervisor.config.rules import edit_problems
from supervisor.diskfull import Gate
from supervisor.drive import drive
from supervisor.gitdiff import DiffError, loop_diff
from supervisor.gitexec import GitError
from supervisor.land import LandError, LandRequest
from supervisor.landing import Landing
from supervisor.lines import TranscriptLine
from supervisor.loop import LoopRunner
from supervisor.process import KILL_GRACE_S
from supervisor.redact import Redactor
from supervisor.sizes import (
    INJECT_MAX_BYTES,
    NOTES_MAX_BYTES,
    size_of,
    too_large,
)
from supervisor.snapshots import loop_snapshot
from supervisor.spec import Config, Limits, LoopSpec
from supervisor.usagewait import AccountWaits
from supervisor.worktree import OverlapChecker

if TYPE_CHECKING:
    from supervisor.agents.ratelimit import RateLimiterRegistry
    from supervisor.journal.history import JournalHistory
    from supervisor.journal.resume import LoopResume, RunResume

SNAPSHOT_TAIL = 200
"""Transcript lines per loop in a snapshot by default (a UI's seed on connect)."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BUDGET = 2
EXIT_USAGE = 3
EXIT_ATTENTION = 4
EXIT_DISK_FULL = 5
EXIT_INTERRUPTED = 130


class Supervisor:
    """Headless core. Implements `api.SupervisorHandle`."""

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
        self.ledger = Ledger("global", config.supervisor.budget)
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
        ledger = Ledger(spec.name, spec.budget.limits, parent=self.ledger)
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

    def _restore_forks(self, resume: RunResume) -> list[str]:
        """Rebuild the run's forks on `--resume`; a line for each that cannot be."""
        notes = []
        for event in resume.forks:
            if event.loop in self.runners:
                notes.append(
                    f"{event.loop}: a loop of that name is in the config; fork not restored"
                )
            elif event.parent not in self.runners:
                notes.append(
                    f"{event.loop}: forked from {event.label}, whose loop is gone from the"
                    " config; not restored"
                )
            else:
                self._add_fork(event, resume.loops.get(event.loop))
        return notes

    def _make_limiters(self) -> RateLimiterRegistry | None:
        if not any(kind_of(a).rate_limit_provider for a in self.config.agents.values()):
            return None
        from supervisor.agents.ratelimit import RateLimiterRegistry

        return RateLimiterRegistry(self.config.supervisor.rate_limits)

    # -- events --------------------------------------------------------------
    def add_sink(self, sink: Callable[[ev.Event], None]) -> None:
        """A lossless synchronous listener (the journal). It must not block."""
        self.bus.add_sink(sink)

    def subscribe(
        self, max_buffer: int = 1000
    ) -> AbstractAsyncContextManager[AsyncIterator[ev.Event]]:
        return self.bus.subscribe(max_buffer)

    @asynccontextmanager
    async def subscribe_with_snapshot(
        self, max_buffer: int = 1000
    ) -> AsyncIterator[tuple[RunSnapshot, AsyncIterator[ev.Event]]]:
        # Atomic: entering the bus subscription does not yield to another task, and
        # snapshot_now() is synchronous, so no event falls between the two.
        async with self.bus.subscribe(max_buffer) as events:
            yield self.snapshot_now(), events

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

    # -- running -------------------------------------------------------------
    async def run(self) -> ev.RunFinished:
        """Run until every loop ended (or, with exit_when_idle, waits for a person)."""
        self.started_at = time.time()
        reaper.become_subreaper()  # orphans of agents come to us, not to init
        self._publish(
            ev.RunStarted(
                run_id=self.run_id,
                config=str(self.config.path),
                loops=tuple(self.runners),
                resumed=self.resumed,
            )
        )
        for note in self._notes:
            self._publish(ev.Notice(level="warning", message=note))
        self._run_clock = anyio.current_time() - self._wall_before
        """The event loop's clock when this run's wall time was 0 (resumes count)."""
        try:
            # One CPU sampler for every process group of the run (`cpumeter`), one
            # sweep for what ended groups left outside their cgroups (`sweep`).
            async with (
                cpumeter.shared() as self._meter,
                sweep.sweeping(KILL_GRACE_S) as self._sweeper,
            ):
                with anyio.CancelScope(deadline=self._wall_deadline()) as wall_scope:
                    self._wall_scope = wall_scope
                    async with anyio.create_task_group() as tg:
                        self._tg = tg
                        for runner in self.runners.values():
                            tg.start_soon(drive, runner, self._publish)
                        self._changed.set()  # a resumed run may have nothing left to do
                        tg.start_soon(self._watch, tg)
            if wall_scope.cancelled_caught:
                self._global_exhausted = True
                self.end_reason = f"global wall budget ({self.ledger.limits.wall or 0:g}s) used up"
                for runner in self.runners.values():
                    runner.force_end("exhausted", self.end_reason)  # publishes the change
        except BaseException:
            self._interrupted = True
            with anyio.CancelScope(shield=True):
                await self._kill_leftovers()
            self._finish_run()
            raise
        await self._kill_leftovers()
        self._tg = None
        return self._finish_run()

    async def _kill_leftovers(self) -> None:
        """Every process of this run still alive dies with the run (each group kills its
        own when it ends: this catches what escaped a group that could not finish)."""
        killed = await reaper.kill_tagged(reaper.has_tag(prefix=f"{self.run_id}/"), KILL_GRACE_S)
        if killed:
            pids = ", ".join(map(str, killed))
            self._publish(
                ev.Notice(
                    level="warning", message=f"killed leftover process(es) of the run: pid {pids}"
                )
            )

    def _finish_run(self) -> ev.RunFinished:
        if self._summary is not None and self._ended_at is not None and not self._interrupted:
            return self._summary  # serve mode: published when the last loop ended
        self._finished = True
        if self._ended_at is None:
            self._ended_at = time.time()
        if self._interrupted:
            for runner in self.runners.values():
                if not runner.finished and runner.state not in ev.ATTENTION_STATES:
                    runner.state, runner.reason = "stopped", "supervisor interrupted"
        results = tuple(r.result() for r in self.runners.values())
        code = self.exit_code()
        stats = self.ledger.statistics()
        summary = ev.RunFinished(
            loops=results,
            tokens=stats.tokens_spent,
            usd=stats.usd_spent,
            wall_s=self.wall_s,
            exit_code=code,
            reason=self.end_reason,
            notes=tuple(self._notes),
        )
        self._summary = summary
        self._publish(summary)
        return summary

    @property
    def wall_s(self) -> float:
        """Wall time of the run: until its last loop ended, not while serve idles."""
        return self._wall_before + ((self._ended_at or time.time()) - self.started_at)

    @property
    def ended_at(self) -> float | None:
        return self._ended_at

    async def _run_metered(self, runner: LoopRunner) -> None:
        """`runner.run` started from another task (a control request): its groups go
        to the run's meter, not to one each."""
        if self._meter is None:
            await runner.run()
            return
        with cpumeter.using(self._meter), sweep.using(self._sweeper):
            await runner.run()

    async def _watch(self, tg: anyio.abc.TaskGroup) -> None:
        """End the run when nothing more can happen without a person (or at all)."""
        while True:
            await self._changed.wait()
            self._changed = anyio.Event()
            crossed = self.ledger.exhausted_dimension()
            if crossed is not None:
                self._global_exhausted = True
                self.end_reason = f"global {crossed} budget used up"
                if not self.ledger.pause_when_exhausted:  # else each loop pauses by itself
                    for runner in self.runners.values():
                        runner.force_end("exhausted", self.end_reason)
            runners = list(self.runners.values())
            if all(r.done for r in runners):
                if self.exit_when_idle:
                    tg.cancel_scope.cancel()
                    return
                if self._ended_at is None:  # serve: the run is over; the server is not
                    self._finish_run()
                continue
            if self._ended_at is not None:  # a finished loop was restarted
                self._ended_at, self._summary, self._finished = None, None, False
            waiting = [r for r in runners if not r.done]
            if self.exit_when_idle and all(r.needs_attention for r in waiting):
                self.end_reason = "every unfinished loop waits for a person: " + ", ".join(
                    r.spec.name for r in waiting
                )
                tg.cancel_scope.cancel()
                return

    def exit_code(self) -> int:
        if self._disk_full:
            return EXIT_DISK_FULL
        runners = list(self.runners.values())
        if self._global_exhausted or any(_by_global_budget(r) for r in runners):
            return EXIT_BUDGET
        if self._interrupted:
            return EXIT_INTERRUPTED
        if any(r.needs_attention for r in runners):
            return EXIT_ATTENTION
        if all(r.state == "succeeded" for r in runners):
            return EXIT_OK
        return EXIT_FAILED

    async def aclose(self) -> None:
        for runner in self.runners.values():
            await runner.agent.aclose()

    async def shutdown(self, reason: str = "shut down by the operator") -> None:
        """End `run()` normally now (TUI quit, `ctl shutdown`): loops still going end
        `stopped`, loops waiting for a person keep their state, and the summary and exit
        code follow as for any other end (not 130: nothing was interrupted)."""
        self.shutdown_now(reason)

    def shutdown_now(self, reason: str) -> None:
        """`shutdown` for callers that cannot await (a signal handler, a socket op)."""
        if self._ended_at is not None:  # the run had ended: its outcome stands
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
            return
        for runner in self.runners.values():
            if not runner.done and not runner.needs_attention:
                runner.force_end("stopped", reason)
        self.end_reason = reason
        self._control("shutdown", None, reason)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    # -- a full disk under the journal (wired by durable.py; see diskfull.py) -----
    def journal_full(self, message: str) -> None:
        """Nothing spends while nothing can be journalled: cancel turns, hold new ones."""
        if self._finished:
            return
        self.gate.close(message)
        self.notice(message, level="error")
        for runner in self.runners.values():
            runner.interrupt_turn(message)

    def journal_writable(self, message: str) -> None:
        self.gate.open()
        if not self._finished:
            self.notice(message)

    def journal_gave_up(self, message: str) -> None:
        """The disk stayed full for the grace period: end the run (exit code 5).

        The loops' states are set for the summary only, not published: the journal
        keeps them unfinished, so `--resume` continues the run once space is freed.
        """
        if self._finished:
            return
        self._disk_full = True
        self.end_reason = message
        for runner in self.runners.values():
            if not runner.done and not runner.needs_attention:
                runner.state, runner.reason = "stopped", message
        self.notice(message, level="error")
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def notice(self, message: str, *, level: str = "info", loop: str | None = None) -> None:
        self._publish(ev.Notice(message=message, level=level, loop=loop))  # type: ignore[arg-type]

    # -- control operations (api.SupervisorHandle) ------------------------------
    def _runner(self, loop: str) -> LoopRunner:
        try:
            return self.runners[loop]
        except KeyError:
            raise ControlError(f"no loop named {loop!r}") from None

    def _targets(self, loop: str | None) -> list[LoopRunner]:
        return list(self.runners.values()) if loop is None else [self._runner(loop)]

    def _control(self, op: str, loop: str | None, detail: str = "") -> None:
        self._publish(ev.ControlApplied(op=op, loop=loop, detail=detail))

    async def pause(self, loop: str | None = None) -> None:
        for runner in self._targets(loop):
            if not runner.finished:
                runner.request_pause()
        self._control("pause", loop)

    async def resume(self, loop: str | None = None) -> None:
        for runner in self._targets(loop):
            if not runner.finished:
                runner.request_resume()
        self._control("resume", loop)

    async def stop(self, loop: str | None = None) -> None:
        for runner in self._targets(loop):
            if not runner.finished:
                runner.request_stop()
        self._control("stop", loop)

    async def restart(self, loop: str) -> None:
        runner = self._runner(loop)
        self._control("restart", loop)
        if runner.finished or (runner.state == "pending" and runner.started_at is None):
            if self._tg is None:
                raise ControlError("the supervisor is not running")
            runner.prepare_restart()
            runner.state, runner.reason = "pending", "restarted by the operator"
            self._tg.start_soon(self._run_metered, runner)
        else:
            runner.request_restart()

    async def inject(self, loop: str, text: str) -> None:
        if not text.strip():
            raise ControlError("nothing to inject")
        runner = self._runner(loop)
        size = size_of(text)
        problem = too_large("the inject", size, INJECT_MAX_BYTES) or too_large(
            f"loop {loop!r}'s pending operator notes with this one",
            runner.pending_notes_bytes + size,
            NOTES_MAX_BYTES,
        )
        if problem is not None:
            raise ControlError(f"{problem}; nothing was added")
        runner.inject(text)
        self._control("inject", loop, text)

    async def edit(
        self,
        loop: str,
        *,
        prompt: str | None = None,
        max_iterations: int | None = None,
        limits: Limits | None = None,
    ) -> None:
        runner = self._runner(loop)
        spec = runner.spec
        problems = edit_problems(prompt=prompt, max_iterations=max_iterations, limits=limits)
        if problems:
            raise ControlError("; ".join(map(str, problems)))
        changes: dict[str, object] = {}
        if prompt is not None:
            changes["prompt"] = prompt
        if max_iterations is not None:
            changes["max_iterations"] = max_iterations
        if limits is not None:
            changes["budget"] = dataclasses.replace(spec.budget, limits=limits)
        new_spec: LoopSpec = dataclasses.replace(spec, **changes)  # type: ignore[arg-type]
        runner.apply_edit(new_spec)
        self._control("edit", loop, ", ".join(sorted(changes)))

    async def budget(self, limits: Limits | None) -> None:
        limits = limits or Limits()
        problems = edit_problems(limits=limits)
        if problems:
            raise ControlError("; ".join(map(str, problems)))
        self.ledger.limits = limits
        if self._wall_scope is not None:  # the run's deadline follows its wall limit
            self._wall_scope.deadline = self._wall_deadline()
        if self.ledger.exhausted_dimension() is None:
            self._global_exhausted, self.end_reason = False, ""
        for runner in self.runners.values():
            runner.budget_raised()
        self._control("budget", None, describe_limits(limits))

    async def step_in(self, loop: str) -> StepIn:
        runner = self._runner(loop)
        if not runner.finished:
            runner.request_pause_now()
            await runner.wait_until_idle()
        spec = runner.agent_spec
        session = runner.agent.session_id
        kind = kind_of(spec)
        argv = kind.resume_argv(spec, session) if kind.resume_argv is not None else None
        agent = runner.agent
        if argv and session and isinstance(agent, ForksSessions) and agent.forking == session:
            argv = (*argv, *kind.fork_flags)  # a fork before its first turn: fork it here too
        self._control("step_in", loop, f"session {session}" if session else "")
        return StepIn(
            loop=loop,
            agent_kind=spec.kind,
            workspace=str(runner.spec.workspace),
            session_id=session,
            resume_argv=argv,
            chat=kind.chat,
        )

    async def chat(self, loop: str, text: str) -> str:
        runner = self._runner(loop)
        if not self.gate.is_open:  # a chat turn spends too; nothing could journal it
            raise ControlError(self.gate.reason)
        if not (runner.finished or runner.needs_attention):
            raise ControlError(f"loop {loop!r} is {runner.state}: step in first")
        if not text.strip():
            raise ControlError("nothing to say")
        problem = too_large("the message", size_of(text), INJECT_MAX_BYTES)
        if problem is not None:
            raise ControlError(problem)
        self._control("chat", loop, text)
        return await runner.chat(text)

    async def hand_back(self, loop: str) -> None:
        self._control("hand_back", loop)
        await self.resume(loop)

    async def land(
        self,
        loop: str,
        *,
        squash: bool = False,
        into: str | None = None,
        push: str | None = None,
        pr: bool = False,
    ) -> str:
        runner = self._runner(loop)
        if not (runner.finished or runner.needs_attention or runner.state == "scheduled"):
            raise ControlError(
                f"loop {loop!r} is {runner.state}: land it once it has ended or is paused"
            )
        request = LandRequest(squash=squash, into=into, push=push, pr=pr)
        try:
            message = await self.landing.land(runner.spec, request)
        except LandError as exc:
            raise ControlError(self.redactor.text(str(exc))) from None
        self._control("land", loop, message)
        runner.landed(message.removeprefix(f"{loop}: "))
        return message

    async def fork(
        self, loop: str, *, iteration: int, name: str | None = None, prompt: str | None = None
    ) -> str:
        """Start a new loop from `loop`'s iteration `iteration` (`fork.py`); its record
        is published (journalled) before the loop's first event."""
        from supervisor.fork import (
            ForkError,
            check_request,
            default_name,
            fork_spec,
            forked_event,
            make_worktree,
        )

        parent = self._runner(loop)
        if self._tg is None:
            raise ControlError("the supervisor is not running")
        if iteration < 1:
            raise ControlError("iteration numbers start at 1")
        if prompt is not None and not prompt.strip():
            raise ControlError("the fork's prompt is empty")
        name = name or default_name(loop, iteration, self.runners)
        try:
            check_request(parent.spec, name, self.runners)
            point = await self._history().fork_point(loop, iteration, self.run_id)
            event = forked_event(parent.spec, name, point, prompt=prompt)
            spec = fork_spec(parent.spec, event)
            await anyio.to_thread.run_sync(make_worktree, parent.spec, spec, event.commit)
        except ForkError as exc:
            raise ControlError(self.redactor.text(str(exc))) from None
        if name in self.runners:  # forked under this name while git worked
            raise ControlError(f"a loop named {name!r} exists in this run: choose another name")
        self._publish(event)
        runner = self._add_fork(event, None)
        self._control("fork", loop, f"{name} from iteration {iteration}")
        self._tg.start_soon(self._run_metered, runner)
        return f"{name}: forked from {event.label} at commit {event.commit[:10]}"

    async def transcript(
        self, loop: str, *, before: int | None = None, limit: int = 500
    ) -> list[TranscriptLine]:
        lines = list(self._runner(loop).tail.snapshot())
        end = len(lines) if before is None else max(0, before)
        return lines[max(0, end - limit) : end]

    async def iterations(self, loop: str, *, limit: int = 1000) -> list[IterationSummary]:
        self._runner(loop)
        return await self._history().iterations(loop, self.run_id, limit=limit)

    async def iteration(self, loop: str, iteration: int) -> IterationDetail:
        self._runner(loop)
        return await self._history().iteration(loop, iteration, self.run_id)

    async def diff(self, loop: str, *, iteration: int | None = None) -> LoopDiff:
        """`gitdiff.loop_diff` in a worker thread; an iteration's checkpoint is looked up
        in what this process committed, then in the journal."""
        runner = self._runner(loop)
        point: tuple[str | None, str] | None = None
        if iteration is not None:
            if iteration < 1:
                raise ControlError("iteration numbers start at 1")
            made = runner.checkpointer.commits.get(iteration) if runner.checkpointer else None
            if made is not None and made.commit is not None:
                point = (made.parent, made.commit)
            elif runner.spec.worktree is not None:
                point = await self._history().commit_of(loop, iteration, self.run_id)
        spec = runner.spec
        try:
            return await anyio.to_thread.run_sync(
                lambda: loop_diff(spec, iteration=iteration, commit=point)
            )
        except (DiffError, GitError) as exc:
            raise ControlError(str(exc)) from None

    def _history(self) -> JournalHistory:
        if self.history is None:
            raise ControlError("this run keeps no journal: there is no history to read")
        return self.history

    # -- snapshot ------------------------------------------------------------
    async def snapshot(self, *, tail: int = SNAPSHOT_TAIL) -> RunSnapshot:
        return self.snapshot_now(tail=tail)

    def snapshot_now(self, *, tail: int = SNAPSHOT_TAIL) -> RunSnapshot:
        stats = self.ledger.statistics()
        slots = self.slots.statistics()
        over = self._finished or all(r.done for r in self.runners.values())
        return RunSnapshot(
            run_id=self.run_id,
            config_path=str(self.config.path),
            started_at=self.started_at,
            finished=self._finished,
            loops=tuple(loop_snapshot(r, tail) for r in self.runners.values()),
            budget=BudgetSnapshot(
                limits=self.ledger.limits,
                tokens=stats.tokens_spent,
                usd=stats.usd_spent,
                cpu_s=stats.cpu_spent,
                wall_s=self.wall_s,
                tokens_reserved=stats.tokens_reserved,
                usd_reserved=stats.usd_reserved,
                slots_in_use=slots.borrowed_tokens,
                slots_total=int(slots.total_tokens),
            ),
            exit_code=self.exit_code() if over else None,
            end_reason=self.end_reason,
            ended_at=self._ended_at,
        )


def _by_global_budget(runner: LoopRunner) -> bool:
    """Ended by the global ledger (budget.Shortfall reasons name their scope first):
    what it had left could not pay for another turn, though not spent to the token."""
    return runner.state == "exhausted" and runner.reason.startswith("global ")
