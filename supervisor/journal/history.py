"""A run's iterations and one iteration's detail, read from the journal for the handle.

`Supervisor.iterations()` / `iteration()` answer from here, so every front-end (the
TUI's history screen, a client attached over the socket) asks the handle instead
of opening SQLite itself. Reads run in a worker thread on their own read-only
connection (`JournalReader`): they never block the event loop nor the writer. What
the writer has not committed yet (its last ~50 ms batch) is not seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from supervisor.api import (
    CheckSummary,
    ControlError,
    IterationDetail,
    IterationSummary,
)
from supervisor.journal.schema import JournalError

if TYPE_CHECKING:
    from supervisor.journal.forks import ForkPoint
    from supervisor.journal.reader import IterationRow


def summary(row: IterationRow) -> IterationSummary:
    return IterationSummary(
        iteration=row.iteration,
        attempt=row.attempt,
        outcome=row.outcome,
        reason=row.reason,
        tokens=row.tokens,
        usd=row.usd,
        started=row.started,
        ended=row.ended,
        commit=row.commit,
    )


class JournalHistory:
    """The history of runs journalled in `state_dir` (a durable run's, `durable.py`)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)

    async def iterations(self, loop: str, run_id: str, *, limit: int) -> list[IterationSummary]:
        """Every attempt of `loop` in run `run_id`, the newest `limit`, oldest first."""
        return await anyio.to_thread.run_sync(self._iterations, loop, run_id, limit)

    async def iteration(self, loop: str, iteration: int, run_id: str) -> IterationDetail:
        return await anyio.to_thread.run_sync(self._iteration, loop, iteration, run_id)

    async def commit_of(
        self, loop: str, iteration: int, run_id: str
    ) -> tuple[str | None, str] | None:
        """(parent, commit) of the iteration's checkpoint; None when it made none."""
        return await anyio.to_thread.run_sync(self._commit_of, loop, iteration, run_id)

    async def fork_point(self, loop: str, iteration: int, run_id: str) -> ForkPoint:
        """The loop at the end of `iteration` (`journal.forks`); ControlError when the
        journal does not have that iteration."""
        return await anyio.to_thread.run_sync(self._fork_point, loop, iteration, run_id)

    def _fork_point(self, loop: str, iteration: int, run_id: str) -> ForkPoint:
        try:
            from supervisor.journal.reader import JournalReader  # a fork asked for

            with JournalReader(self.state_dir) as reader:
                point = reader.fork_point(loop, iteration, run_id)
        except JournalError as exc:
            raise ControlError(str(exc)) from None
        if point is None:
            raise ControlError(f"loop {loop!r} has no iteration {iteration} in this run")
        return point

    def _commit_of(self, loop: str, iteration: int, run_id: str) -> tuple[str | None, str] | None:
        try:
            from supervisor.journal.reader import JournalReader  # a history asked for

            with JournalReader(self.state_dir) as reader:
                row = reader.iteration_commit(loop, iteration, run_id)
        except JournalError:
            raise ControlError(f"loop {loop!r} has no iteration {iteration} in this run") from None
        return None if row is None or row.commit is None else (row.parent, row.commit)

    def _iterations(self, loop: str, run_id: str, limit: int) -> list[IterationSummary]:
        try:
            from supervisor.journal.reader import JournalReader  # a history asked for

            with JournalReader(self.state_dir) as reader:
                rows = reader.loop_iterations(loop, run_id)
        except JournalError as exc:
            raise ControlError(str(exc)) from None
        return [summary(row) for row in rows[-limit:]] if limit > 0 else []

    def _iteration(self, loop: str, iteration: int, run_id: str) -> IterationDetail:
        try:
            from supervisor.journal.reader import JournalReader  # a history asked for

            with JournalReader(self.state_dir) as reader:
                rows = reader.loop_iterations(loop, run_id)
                attempts = [r for r in rows if r.iteration == iteration]
                if not attempts:
                    raise ControlError(f"loop {loop!r} has no iteration {iteration} in this run")
                detail = reader.iteration_detail(loop, iteration, run_id)
                checks = reader.iteration_checks(loop, iteration, run_id)
        except JournalError as exc:
            raise ControlError(str(exc)) from None
        return IterationDetail(
            loop=loop,
            iteration=iteration,
            summary=summary(attempts[-1]),
            prompt=detail.prompt,
            transcript=detail.transcript,
            checks=tuple(
                CheckSummary(
                    name=str(c.get("name", "")),
                    passed=bool(c.get("passed")),
                    exit_code=c.get("exit_code"),
                    summary=str(c.get("summary", "")),
                )
                for c in checks
            ),
        )
