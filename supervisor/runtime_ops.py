"""The control operations of `api.SupervisorHandle`: pause, resume, stop, restart,
inject, edit, budget, step-in, chat, land, fork, add, and the history reads.

Each op validates its request (a `ControlError` tells the operator why not), asks
the loop's runner to act at its next safe point (`LoopRunner.request_*`: no op
awaits a turn) and publishes a `ControlApplied` record. They are apart from the
run's task group (runtime.py) so that the handle's surface reads as one list; the
ops that start a loop (restart of an ended loop, fork, add) start it in that task group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from supervisor import cpumeter, sweep
from supervisor import events as ev
from supervisor.agents.base import forks_sessions
from supervisor.agents.registry import kind_of
from supervisor.api import (
    ControlError,
    IterationDetail,
    IterationSummary,
    LoopDiff,
    StepIn,
)
from supervisor.config.load import describe_limits
from supervisor.config.rules import edit_problems
from supervisor.gitdiff import DiffError, loop_diff
from supervisor.gitexec import GitError
from supervisor.land import LandError, LandRequest
from supervisor.lines import TranscriptLine
from supervisor.loop import LoopRunner
from supervisor.runtime_setup import RunSetup
from supervisor.sizes import (
    INJECT_MAX_BYTES,
    NOTES_MAX_BYTES,
    size_of,
    too_large,
)
from supervisor.spec import Limits, edited

if TYPE_CHECKING:
    from supervisor.journal.history import JournalHistory


INTERACTIVE_CUT = (
    "step-in passes --resume-session-at, but the interactive Claude Code CLI (2.1.332)"
    " does not cut the session there: the conversation you step into also holds the"
    " parent's turns after the forked iteration (the fork's own turns are cut)"
)
"""Measured with the real CLI on a pty (tests/agents/test_claude_code_real_cli.py)."""


class SupervisorOps(RunSetup):
    """The operator's requests to a run (`api.SupervisorHandle`'s control ops)."""

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
        runner.apply_edit(edited(spec, prompt=prompt, max_iterations=max_iterations, limits=limits))
        # The edit is state (journalled: `--resume` and the journal's status keep it),
        # then a line of the log.
        self._publish(
            ev.LoopEdited(
                loop=loop,
                prompt=prompt,
                max_iterations=max_iterations,
                limits=None if limits is None else limits.to_dict(),
            )
        )
        changes = [
            key
            for key, value in (("budget", limits), ("max_iterations", max_iterations),
                               ("prompt", prompt))
            if value is not None
        ]  # fmt: skip
        self._control("edit", loop, ", ".join(changes))

    async def budget(self, limits: Limits | None) -> None:
        limits = limits or Limits()
        problems = edit_problems(limits=limits)
        if problems:
            raise ControlError("; ".join(map(str, problems)))
        self.ledger.limits = limits
        self._publish(ev.BudgetChanged(limits=limits.to_dict()))
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
        if (
            argv
            and session
            and kind.fork_flags is not None
            and forks_sessions(agent)
            and agent.forking == session
        ):  # a fork before its first turn: fork (and cut) the parent's session here too
            argv = (*argv, *kind.fork_flags(agent.fork_at))
            if agent.fork_at:
                self.notice(INTERACTIVE_CUT, level="warning", loop=loop)
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

    async def add(
        self,
        name: str,
        *,
        like: str,
        prompt: str | None = None,
        max_iterations: int | None = None,
        limits: Limits | None = None,
    ) -> str:
        """Start a new loop `name` made like `like` (`added.py`: only its prompt,
        max_iterations and limits are the request's); its record is published
        (journalled) before the loop's first event."""
        from supervisor.added import AddError, added_event, added_spec, make_worktree

        like_runner = self._runner(like)
        if self._tg is None:
            raise ControlError("the supervisor is not running")
        try:
            event = added_event(
                like_runner.spec,
                name,
                self.runners,
                prompt=prompt,
                max_iterations=max_iterations,
                limits=limits,
            )
            spec = added_spec(like_runner.spec, event)
            await anyio.to_thread.run_sync(make_worktree, like_runner.spec, spec)
        except AddError as exc:
            raise ControlError(self.redactor.text(str(exc))) from None
        if name in self.runners:  # added under this name while git worked
            raise ControlError(f"a loop named {name!r} exists in this run: choose another name")
        self._publish(event)
        runner = self._add_added(event, None)
        self._control("add", name, f"like {like}")
        self._tg.start_soon(self._run_metered, runner)
        where = f", worktree {spec.workspace}" if spec.worktree is not None else ""
        return f"{name}: started like {like}{where}"

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

    async def _run_metered(self, runner: LoopRunner) -> None:
        """`runner.run` started from another task (a control request): its groups go
        to the run's meter, not to one each."""
        if self._meter is None:
            await runner.run()
            return
        with cpumeter.using(self._meter), sweep.using(self._sweeper):
            await runner.run()
