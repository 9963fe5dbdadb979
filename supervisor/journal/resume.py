"""What a restarted supervisor needs to continue a run: built from the journal.

The journal derives one `LoopResume` per loop from the events it recorded; the
runtime seeds each loop's ledger, iteration counter and agent conversation from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from supervisor.events import LoopAdded, LoopEdited, LoopForked
from supervisor.score import ScoreEntry
from supervisor.spec import Limits


@dataclass(frozen=True, slots=True)
class LoopResume:
    name: str
    state: str
    """Last state recorded; end states stay finished."""
    reason: str
    next_iteration: int
    """The iteration to run next: the one that was in flight, else the one after the last."""
    tokens: int
    usd: float
    cpu_s: float
    retries_used: int = 0
    session_id: str | None = None
    conversation: list[dict[str, Any]] | None = None
    last_output: str = ""
    check_output: str = ""
    notes: tuple[str, ...] = ()
    """Operator notes not yet answered by a finished iteration."""
    detector: dict[str, Any] | None = None
    """The stuck detector's memory (`StuckDetector.snapshot`)."""
    runs: int = 0
    """Scheduled runs started (the `run` of the last `scheduled_run` event)."""
    last_run_at: float | None = None
    """When the last scheduled run started (for catch_up)."""
    interrupted_iteration: int | None = None
    charged_at_reservation: int = 0
    """Tokens charged at the reservation because usage was never seen (crash)."""
    last_check: str | None = None
    last_check_passed: bool | None = None
    """The last iteration's check line, as the live loop showed it (`check_summary`)."""
    started_at: float | None = None
    ended_at: float | None = None
    """When the loop started (since its last restart) and reached its end state."""
    commits: tuple[str, ...] = ()
    """Checkpoint commits the journal recorded for the loop in this run (`checkpoint.py`:
    a commit of the iteration that runs again, not among them, was cut off by the crash)."""
    scores: tuple[ScoreEntry, ...] = ()
    """A metric loop's judged iterations since its last restart (`score.py`): its best
    score and the commit that holds it survive the crash."""
    usage_wait_until: float | None = None
    """When the usage-limit wait it was in ends (its last state: `waiting` with cause
    "usage_limit"); the resumed loop waits out the rest instead of being refused again."""
    landing: str = ""
    """Its `on_success` landing: "started" (no record of its end: `--resume` lands it),
    "finished", or "" (never began) (`journal/landings.py`)."""
    landing_succeeded: str = ""
    """Why it succeeded, as the started landing recorded it."""
    edit: LoopEdited | None = None
    """The operator's edits of the loop, folded (`journal.edits`): applied over its spec."""


@dataclass(frozen=True, slots=True)
class RunResume:
    run_id: str
    loops: dict[str, LoopResume] = field(default_factory=dict)
    tokens: int = 0
    usd: float = 0.0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    notes: tuple[str, ...] = ()
    """Lines for the summary, e.g. "fix-auth: 8,000 tokens charged at the reservation"."""
    forks: tuple[LoopForked | LoopAdded, ...] = ()
    """The loops the run forked (`fork.py`) or added (`added.py`), in the order it made
    them: not in loops.toml, rebuilt from these records and the loops they came from."""
    limits: Limits | None = None
    """The global limits the operator last set (`budget`); None: the config's."""
