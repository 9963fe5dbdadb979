"""A running supervisor's side of worktrees: the hook a worktree loop's runner calls
once it succeeded (`on_success`) and the landing the `land` control op asks for.
Git work runs in a worker thread: the event loop the loops share never waits on a
merge or a push.
"""

from __future__ import annotations

import anyio.to_thread

from supervisor.land import LandError, LandRequest, land
from supervisor.land_report import LoopRecords, pr_text
from supervisor.redact import Redactor
from supervisor.spec import LoopSpec
from supervisor.worktree import branch_name


class Landing:
    """Landing for the worktree loops of one supervisor."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.records = LoopRecords()
        """Each loop's iterations and checks, for a pull request's body (a bus sink)."""

    def lands(self, spec: LoopSpec) -> bool:
        """Whether the loop does something with its branch once it succeeded."""
        return spec.worktree is not None and spec.on_success != "keep"

    async def land(self, spec: LoopSpec, request: LandRequest) -> str:
        """Land the loop's branch (`land.land`) off the event loop; LandError says why not."""

        def text(base: str) -> tuple[str, str]:
            record = self.records.get(spec.name)
            return pr_text(spec, record, branch_name(spec), base, self.redactor.text)

        message = await anyio.to_thread.run_sync(land, spec, request, text)
        return self.redactor.text(message)

    # -- the runner's hooks ------------------------------------------------------------
    async def on_success(self, spec: LoopSpec) -> tuple[str, bool]:
        """`on_success` of a loop that just succeeded: (what was done, or why it could
        not be, and whether it was done)."""
        request = LandRequest.on_success(spec.on_success)
        if request is None:
            return "", True
        prefix = f"{spec.name}: "
        try:
            return (await self.land(spec, request)).removeprefix(prefix), True
        except LandError as exc:
            why = self.redactor.text(str(exc)).removeprefix(prefix)
            return f'on_success = "{spec.on_success}" failed: {why}', False
