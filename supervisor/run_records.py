"""Events that are durable run records rather than progress: a fork, a landing, a loop
added or edited, the global budget changed. The journal keeps each as state that
`--resume` and the journal's status replay; `events` re-exports them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from supervisor.events_base import Event, LoopEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopForked(LoopEvent):
    """A new loop (`loop`) forked from `parent` at the end of its iteration `iteration`
    (`fork.py`): its worktree starts at `commit` and its conversation from what the
    parent's agent had then. Journalled first, so `--resume` brings the fork back: it
    is not in loops.toml, and this record is how it is rebuilt from its parent."""

    type: ClassVar[str] = "forked"
    parent: str
    iteration: int
    commit: str
    """The commit its branch starts from (iteration N's checkpoint, or the nearest
    earlier one, or the parent's base when none changed anything)."""
    prompt: str | None = None
    """Its own prompt template (`--prompt-file`); None: the parent's."""
    session_id: str | None = None
    """The parent's agent session after iteration N (Claude Code: `--fork-session`)."""
    session_at: str | None = None
    """Where that session stood after iteration N (Claude Code: `--resume-session-at`);
    None when the journal did not say (an older one): the fork gets the whole session."""
    conversation: list[dict[str, Any]] | None = None
    """The parent's API conversation after iteration N."""
    last_output: str = ""
    check_output: str = ""
    """`$last_output` and `$check_output` as they were after iteration N."""

    @property
    def label(self) -> str:
        """How status and history show the parent: "LOOP@N"."""
        return f"{self.parent}@{self.iteration}"


@dataclass(frozen=True, slots=True, kw_only=True)
class LandingStarted(LoopEvent):
    """A worktree loop that succeeded begins its `on_success` landing (`landing.py`).
    Until a `LandingFinished` follows, `--resume` lands it (again: landing is
    idempotent), even after a kill -9 in the middle of it."""

    type: ClassVar[str] = "landing_started"
    mode: str
    """Its `on_success`: "land", "push" or "pr"."""
    succeeded: str = ""
    """Why the loop succeeded (its reason before the landing's outcome joined it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LandingFinished(LoopEvent):
    """The `on_success` landing is settled: done (by `on_success` or the operator's
    `land`), or given up (the operator stopped the loop): no `--resume` repeats it."""

    type: ClassVar[str] = "landing_finished"
    mode: str
    landed: bool
    message: str = ""
    commit: str = ""
    """The target's commit after a merge, the pushed commit after a push or PR."""
    ref: str = ""
    """The remote ref pushed to ("origin/loopvisor/fix")."""
    url: str = ""
    """The pull request's URL."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopAdded(LoopEvent):
    """A new loop (`loop`) started in a running supervisor by the `add` op, made like
    the run's loop `like` (its agent, workspace kind, checks, budget retries; `added.py`)
    with its own prompt, max_iterations and limits, all as they were when it was added.
    Journalled first, so `--resume` rebuilds it as it does a fork: it is not in
    loops.toml."""

    type: ClassVar[str] = "added"
    like: str
    prompt: str
    max_iterations: int
    limits: dict[str, Any]
    """Its own limits (`spec.Limits` as a dict)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopEdited(LoopEvent):
    """An operator's edit of a loop (`edit`): the values it set, from the loop's next
    iteration; a field left None was not changed. Durable state, not a log line:
    `--resume` and the journal's `status --json` apply a loop's edits in order, over
    its spec (also across a restart of the loop: the edit is the loop's, not its run's)."""

    type: ClassVar[str] = "edited"
    prompt: str | None = None
    max_iterations: int | None = None
    limits: dict[str, Any] | None = None
    """`spec.Limits` as a dict (all four keys: an edit replaces the loop's limits)."""

    def then(self, later: LoopEdited) -> LoopEdited:
        """This edit followed by `later`: `later`'s values where it set them."""
        return dataclasses.replace(
            later,
            prompt=self.prompt if later.prompt is None else later.prompt,
            max_iterations=(
                self.max_iterations if later.max_iterations is None else later.max_iterations
            ),
            limits=self.limits if later.limits is None else later.limits,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetChanged(Event):
    """The operator replaced the run's global limits (`budget`): durable like
    `LoopEdited`, so `--resume` and the journal's status keep them."""

    type: ClassVar[str] = "budget_changed"
    limits: dict[str, Any]
    """`spec.Limits` as a dict."""
