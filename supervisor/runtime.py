"""The Supervisor: runs every loop of a config concurrently under one hard budget.

`Supervisor(config).run()` under anyio: one task group, one task per loop, a
CapacityLimiter for the compute slots, a global ledger every loop ledger draws
from. Front-ends use it through `api.SupervisorHandle` (snapshot, subscribe,
control operations). With `exit_when_idle` (headless `run`) the run ends as soon
as every unfinished loop waits for a person; `serve` keeps waiting instead.

This module is the run's task group and its end (exit code, summary, shutdown, a
full disk) and what a client reads (subscribe, snapshot); the runners it drives are
built in `runtime_setup.RunSetup`, the control ops are `runtime_ops.SupervisorOps`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
import anyio.abc

from supervisor import cpumeter, reaper, sweep
from supervisor import events as ev
from supervisor.api import BudgetSnapshot, RunSnapshot
from supervisor.drive import drive
from supervisor.loop import LoopRunner
from supervisor.pipeline import waits_for_person
from supervisor.process import KILL_GRACE_S
from supervisor.runtime_ops import SupervisorOps
from supervisor.snapshots import loop_snapshot

SNAPSHOT_TAIL = 200
"""Transcript lines per loop in a snapshot by default (a UI's seed on connect)."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BUDGET = 2
EXIT_USAGE = 3
EXIT_ATTENTION = 4
EXIT_DISK_FULL = 5
EXIT_INTERRUPTED = 130


class Supervisor(SupervisorOps):
    """Headless core. Implements `api.SupervisorHandle`."""

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
            if self.exit_when_idle and all(waits_for_person(r) for r in waiting):
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
        if all(r.state == "succeeded" for r in runners if r.spec.attempt_of is None):
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
