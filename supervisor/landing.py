"""A running supervisor's side of worktrees: the hooks a worktree loop's runner calls
(`setup` before its first iteration, `on_success` once it succeeded) and the landing
the `land` control op asks for.

Setup commands run like checks (`checks.run_check`: own process group, allow-listed
environment plus `env` / `pass_env`, timeout, output captured), with the loop's
`LOOPVISOR_*` variables and `LOOPVISOR_REPO` (the repo the worktree was made from:
`cp "$LOOPVISOR_REPO/.env" .`). Their output goes to the transcript (stream
`setup`), their CPU time to the loop's ledgers. Git work runs in a worker thread:
the event loop the loops share never waits on a merge or a push.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

import anyio.to_thread

from supervisor import events as ev
from supervisor.checks import run_check
from supervisor.durations import format_duration
from supervisor.land import Landed, LandError, LandRequest, land_outcome
from supervisor.land_report import LoopRecords, pr_text
from supervisor.redact import Redactor
from supervisor.spec import LoopSpec
from supervisor.worktree import WorktreeError, branch_name, setup_done, setup_pending

if TYPE_CHECKING:
    from supervisor.journal.resume import LoopResume
    from supervisor.loop import LoopRunner

REPO_ENV = "LOOPVISOR_REPO"


class Landing:
    """Setup and landing for the worktree loops of one supervisor."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.records = LoopRecords()
        """Each loop's iterations and checks, for a pull request's body (a bus sink)."""

    def lands(self, spec: LoopSpec) -> bool:
        """Whether the loop does something with its branch once it succeeded."""
        return spec.worktree is not None and spec.on_success != "keep"

    async def land(self, spec: LoopSpec, request: LandRequest) -> str:
        """Land the loop's branch (`land.land`) off the event loop; LandError says why not."""
        return (await self._land(spec, request)).message

    async def _land(self, spec: LoopSpec, request: LandRequest) -> Landed:
        def text(base: str) -> tuple[str, str]:
            record = self.records.get(spec.name)
            return pr_text(spec, record, branch_name(spec), base, self.redactor.text)

        done = await anyio.to_thread.run_sync(land_outcome, spec, request, text)
        return replace(done, message=self.redactor.text(done.message))

    # -- the runner's hooks ------------------------------------------------------------
    async def on_success(self, spec: LoopSpec) -> tuple[str, ev.LandingFinished | None]:
        """`on_success` of a loop that just succeeded: (what was done, or why it could
        not be; the record of what was done, None when it was not)."""
        request = LandRequest.on_success(spec.on_success, spec.push_remote)
        mode = spec.on_success
        if request is None:
            return "", ev.LandingFinished(loop=spec.name, mode=mode, landed=False)
        prefix = f"{spec.name}: "
        try:
            done = await self._land(spec, request)
        except LandError as exc:
            why = self.redactor.text(str(exc)).removeprefix(prefix)
            return f'on_success = "{mode}" failed: {why}', None
        message = done.message.removeprefix(prefix)
        return message, ev.LandingFinished(
            loop=spec.name,
            mode=mode,
            landed=True,
            message=message,
            commit=done.commit,
            ref=done.ref,
            url=self.redactor.text(done.url),
        )

    def owed(self, spec: LoopSpec, resume: LoopResume) -> str | None:
        """Whether a resumed loop's `on_success` landing is still to do (a kill -9 came
        before its `landing_finished` record): the reason it succeeded, else None."""
        if not self.lands(spec):
            return None
        if resume.landing == "started":  # succeeded, or paused after a failed landing
            return resume.landing_succeeded or resume.reason
        if resume.landing == "" and resume.state == "succeeded":
            return resume.reason  # killed before it began (or an older journal)
        return None

    async def set_up(self, runner: LoopRunner, env: Mapping[str, str]) -> str | None:
        """Run the loop's `setup` commands if its worktree still waits for them; None
        when done (or nothing was due), else why the loop fails."""
        spec = runner.spec
        try:
            if not await anyio.to_thread.run_sync(setup_pending, spec):
                return None
        except (WorktreeError, OSError) as exc:
            return f"setup: {exc}"
        assert spec.worktree is not None
        env = {**env, REPO_ENV: str(spec.worktree.repo)}
        total = len(spec.setup)
        for index, step in enumerate(spec.setup, 1):
            runner.set_state("running", f"setup {index}/{total}: {step.display}", 0)
            outcome = self.redactor.fields(await run_check(step, workspace=spec.workspace, env=env))
            if outcome.cpu_s > 0:
                runner.ledger.charge_cpu(outcome.cpu_s)
                runner.emit(ev.UsageCharged(loop=spec.name, iteration=0, cpu_s=outcome.cpu_s))
            if outcome.output:
                text = outcome.output if outcome.output.endswith("\n") else outcome.output + "\n"
                runner.emit_output(0, text, "setup")
            took = format_duration(round(outcome.duration_s))
            if not outcome.passed:
                return f"setup `{step.display}` failed: {outcome.summary} ({took})"
            done = f"setup {index}/{total} done: {step.display} ({outcome.summary}, {took})"
            runner.emit(ev.Notice(loop=spec.name, message=done))
        try:
            await anyio.to_thread.run_sync(setup_done, spec)
        except (WorktreeError, OSError) as exc:
            return f"setup: {exc}"
        return None
