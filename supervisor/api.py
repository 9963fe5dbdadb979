"""The one interface a front-end talks to: in-process `Supervisor` or a remote client.

The TUI, `ctl` and the headless printer only use `SupervisorHandle`: a snapshot of
the whole run, a bounded event subscription (alone or with the snapshot it starts
from), a loop's iterations and one iteration's detail, and control operations. The
in-process `runtime.Supervisor` implements it directly; `control.RemoteSupervisor`
implements it over the control socket, so there is one UI code path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from supervisor.events import Event
from supervisor.lines import LineKind, TranscriptLine
from supervisor.spec import Limits


def _kind(value: object) -> LineKind:
    try:
        return LineKind(str(value))
    except ValueError:
        return LineKind.PLAIN


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopSnapshot:
    """Everything a front-end shows about one loop, at one instant."""

    name: str
    agent: str
    agent_kind: str
    state: str
    reason: str
    iteration: int
    max_iterations: int
    tokens: int
    usd: float
    cpu_s: float
    limits: Limits
    retries_used: int
    retries: int
    started_at: float | None
    elapsed_s: float
    last_check: str | None
    last_check_passed: bool | None
    attention: bool
    evidence: str
    session_id: str | None
    prompt: str
    wait_seconds: float | None
    next_run: float | None
    transcript_tail: tuple[TranscriptLine, ...] = ()
    transcript_streaming: bool = False
    """The tail's last line is still being streamed (more of it follows in events)."""
    forked_from: str = ""
    """"PARENT@N": the loop was forked from loop PARENT's iteration N (`loopvisor fork`)."""
    scores: tuple[float | None, ...] = ()
    """A metric loop's score per judged iteration, oldest first (None: no score)."""
    best_score: float | None = None
    best_iteration: int = 0
    """The best score so far and the iteration that holds it (0: none yet)."""
    attempt_of: str = ""
    """RACE: the loop is one attempt of race loop RACE (`race.py`). In JSON each loop
    also has `attempts` (`RunSnapshot.to_dict`): a race's attempts with their cost."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the tail as its lines' texts (their kinds: `RunSnapshot.to_dict`)."""
        tail = self.transcript_tail
        data = dataclasses.asdict(dataclasses.replace(self, transcript_tail=()))
        data["transcript_tail"] = [line.text for line in tail]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], kinds: Sequence[Any] = ()) -> LoopSnapshot:
        """From `to_dict()`; `kinds` names the tail's kinds line by line (those missing or
        unknown, e.g. from an older server, read as `LineKind.PLAIN`)."""
        kwargs = dict(data)
        kwargs["limits"] = Limits(**kwargs["limits"])
        tail = [str(text) for text in kwargs.get("transcript_tail", ())]
        if len(kinds) == len(tail):
            known = [_kind(kind) for kind in kinds]
        else:
            known = [LineKind.PLAIN] * len(tail)
        kwargs["transcript_tail"] = tuple(map(TranscriptLine._make, zip(known, tail, strict=True)))
        kwargs["scores"] = tuple(kwargs.get("scores", ()))
        kwargs.pop("attempts", None)  # derived from the loops' attempt_of (`RunSnapshot`)
        return cls(**kwargs)


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetSnapshot:
    """The global ledger and slots."""

    limits: Limits
    tokens: int
    usd: float
    cpu_s: float
    wall_s: float
    tokens_reserved: int
    usd_reserved: float
    slots_in_use: int
    slots_total: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BudgetSnapshot:
        kwargs = dict(data)
        kwargs["limits"] = Limits(**kwargs["limits"])
        return cls(**kwargs)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSnapshot:
    run_id: str
    config_path: str
    started_at: float
    finished: bool
    loops: tuple[LoopSnapshot, ...]
    budget: BudgetSnapshot
    exit_code: int | None = None
    """The run's exit code once nothing more happens by itself (every loop ended, or the
    run finished): a console that keeps the run open for restarts can say it is over."""
    end_reason: str = ""
    ended_at: float | None = None
    """When the run's last loop ended (epoch seconds); None while it goes on."""
    live: bool = True
    """A supervisor runs it (always, from a live handle; `status --json` reads the
    journal and says whether one still holds the state dir)."""

    def _with_attempts(self, loop: LoopSnapshot) -> dict[str, Any]:
        """`loop` as JSON with `attempts`: each attempt of it (a race) with its state,
        reason and cost; empty for any other loop. Live and journal snapshots alike."""
        data = loop.to_dict()
        data["attempts"] = [
            {
                "name": a.name,
                "state": a.state,
                "reason": a.reason,
                "tokens": a.tokens,
                "usd": round(a.usd, 6),
            }
            for a in self.loops
            if a.attempt_of and a.attempt_of == loop.name
        ]
        return data

    def to_dict(self, *, kinds: bool = False) -> dict[str, Any]:
        """JSON-ready. With `kinds` (the control socket's snapshots) also
        `transcript_kinds`: each loop's tail's line kinds, `{loop: [kind, ...]}`, beside
        the texts in `loops[].transcript_tail`: a client that does not know the key reads
        the snapshot as before, and `status --json` stays what it was."""
        data = {
            "run_id": self.run_id,
            "config_path": self.config_path,
            "started_at": self.started_at,
            "finished": self.finished,
            # The socket's snapshots (`kinds`) keep a loop `cls(**loop)`-readable by a
            # client of this version: `attempts` is for `ctl status --json` and `status
            # --json` (derived from `attempt_of`, which both carry).
            "loops": [
                loop.to_dict() if kinds else self._with_attempts(loop) for loop in self.loops
            ],
            "budget": dataclasses.asdict(self.budget),
            "exit_code": self.exit_code,
            "end_reason": self.end_reason,
            "ended_at": self.ended_at,
            "live": self.live,
        }
        if kinds:
            data["transcript_kinds"] = {
                loop.name: [line.kind.value for line in loop.transcript_tail]
                for loop in self.loops
                if loop.transcript_tail
            }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSnapshot:
        kinds = data.get("transcript_kinds")
        if not isinstance(kinds, dict):
            kinds = {}
        return cls(
            run_id=data["run_id"],
            config_path=data["config_path"],
            started_at=data["started_at"],
            finished=data["finished"],
            loops=tuple(
                LoopSnapshot.from_dict(d, _list(kinds.get(str(d.get("name")))))
                for d in data["loops"]
            ),
            budget=BudgetSnapshot.from_dict(data["budget"]),
            exit_code=data.get("exit_code"),
            end_reason=str(data.get("end_reason") or ""),
            ended_at=data.get("ended_at"),
            live=bool(data.get("live", True)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StepIn:
    """What the operator needs to take a paused loop's conversation over by hand."""

    loop: str
    agent_kind: str
    workspace: str
    session_id: str | None
    resume_argv: tuple[str, ...] | None
    """For Claude Code: the interactive command to run in the terminal (cwd = workspace)."""
    chat: bool
    """True when `chat()` can talk to the loop's agent directly (API and sim agents)."""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["resume_argv"] = list(self.resume_argv) if self.resume_argv else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepIn:
        kwargs = dict(data)
        argv = kwargs.get("resume_argv")
        kwargs["resume_argv"] = tuple(argv) if argv else None
        return cls(**kwargs)


def _known(cls: type[Any], data: dict[str, Any]) -> dict[str, Any]:
    """The fields `cls` has: a newer server may send more (v1 only adds fields)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass(frozen=True, slots=True, kw_only=True)
class IterationSummary:
    """One attempt of one iteration, as the journal recorded it (a history row).

    Attempts of one number are separate rows: an interrupted attempt and its re-run,
    or agent-error retries."""

    iteration: int
    attempt: int
    outcome: str | None
    """None while it runs; `interrupted` once the supervisor that ran it is gone."""
    reason: str
    tokens: int
    usd: float
    started: float
    ended: float | None
    commit: str | None = None
    """A worktree loop's checkpoint commit of this attempt (None: it changed nothing)."""

    @property
    def duration_s(self) -> float | None:
        return None if self.ended is None else max(0.0, self.ended - self.started)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IterationSummary:
        return cls(**_known(cls, data))


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckSummary:
    """One check's verdict in an iteration (its output is in the transcript)."""

    name: str
    passed: bool
    exit_code: int | None
    summary: str

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckSummary:
        return cls(**_known(cls, data))


@dataclass(frozen=True, slots=True, kw_only=True)
class IterationDetail:
    """One iteration of a loop: what was sent, what came back, what the checks said."""

    loop: str
    iteration: int
    summary: IterationSummary
    """The latest attempt: outcome, reason, tokens, USD, times."""
    prompt: str
    """The prompt as sent (of the latest attempt)."""
    transcript: str
    """Agent text, tool calls, check results with their output, in order (all attempts).
    Over the control socket a very large one comes cut in the middle (docs/protocol.md)."""
    checks: tuple[CheckSummary, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["checks"] = [dataclasses.asdict(c) for c in self.checks]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IterationDetail:
        return cls(
            loop=data["loop"],
            iteration=data["iteration"],
            summary=IterationSummary.from_dict(data["summary"]),
            prompt=data["prompt"],
            transcript=data["transcript"],
            checks=tuple(CheckSummary.from_dict(c) for c in data.get("checks", ())),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopDiff:
    """A worktree loop's changes as a patch: its whole work against its base (the commit
    its worktree was created from) or one iteration's checkpoint against its parent."""

    loop: str
    iteration: int | None
    """None: the whole branch against its base."""
    base: str | None
    """The commit on the left (None: there is nothing to compare)."""
    head: str | None
    """The commit on the right: the branch's tip, or the iteration's commit."""
    stat: str = ""
    """git's `--shortstat` line: "3 files changed, 10 insertions(+), 2 deletions(-)"."""
    text: str = ""
    """The patch, as `git diff` prints it; cut at a size limit, with a `✂` marker line."""
    note: str = ""
    """What else to know: why there is no diff, uncommitted changes not shown, ..."""
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopDiff:
        return cls(**_known(cls, data))


class ControlError(Exception):
    """A control operation was refused (unknown loop, invalid edit, ...)."""


class SupervisorHandle(Protocol):
    """What every front-end uses. Loop names are validated; errors raise ControlError."""

    async def snapshot(self, *, tail: int = 200) -> RunSnapshot:
        """The whole run now; `tail` transcript lines per loop (0: none, for cheap polling
        once a UI follows the events)."""
        ...

    def subscribe(
        self, max_buffer: int = 1000
    ) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        """Live events from now on. A subscriber that falls `max_buffer` behind gets an
        `EventsDropped` record in place of what it missed; it never slows a loop."""
        ...

    def subscribe_with_snapshot(
        self, max_buffer: int = 1000
    ) -> AbstractAsyncContextManager[tuple[RunSnapshot, AsyncIterator[Event]]]:
        """`subscribe` plus the run's snapshot taken at the instant the events start:
        every event after it is in the stream, none before it is (nothing lost or
        counted twice), so a UI seeds from the snapshot and applies the events."""
        ...

    async def pause(self, loop: str | None = None) -> None:
        """Pause one loop (None: all) at its next safe point."""
        ...

    async def resume(self, loop: str | None = None) -> None: ...

    async def stop(self, loop: str | None = None) -> None:
        """Stop now: cancel the running turn and kill its process group."""
        ...

    async def restart(self, loop: str) -> None:
        """Start the loop anew from iteration 1 (spent budget stays spent)."""
        ...

    async def inject(self, loop: str, text: str) -> None:
        """Add an operator message to the loop's next prompt."""
        ...

    async def edit(
        self,
        loop: str,
        *,
        prompt: str | None = None,
        max_iterations: int | None = None,
        limits: Limits | None = None,
    ) -> None:
        """Change prompt template and limits from the next iteration; invalid: ControlError."""
        ...

    async def budget(self, limits: Limits | None) -> None:
        """Replace the run's global limits (None: all unlimited); loops paused because
        the global budget ran out (`on_exhausted = "pause"`) go on if it is no longer
        spent. Invalid limits: ControlError."""
        ...

    async def step_in(self, loop: str) -> StepIn:
        """Pause the loop now (its running turn is cancelled and re-run later) and
        describe how to take over its conversation."""
        ...

    async def chat(self, loop: str, text: str) -> str:
        """One operator turn on the loop's own agent and conversation; tokens are charged
        to the loop. Output streams as `output` events with stream "operator"/"assistant"."""
        ...

    async def hand_back(self, loop: str) -> None:
        """End the step-in: the loop continues from the (possibly longer) conversation."""
        ...

    async def land(
        self,
        loop: str,
        *,
        squash: bool = False,
        into: str | None = None,
        push: str | None = None,
        pr: bool = False,
    ) -> str:
        """Land the branch of a worktree loop that ended or is paused (`land.land`): merge
        it into `into` (default: the branch its worktree was made from), one squashed
        commit with `squash`; or push it to the remote `push`; or push it and open a pull
        request with `pr`. Returns what was done; a refusal or a conflict (which changes
        nothing) raises ControlError saying why."""
        ...

    async def fork(
        self, loop: str, *, iteration: int, name: str | None = None, prompt: str | None = None
    ) -> str:
        """Start a new loop `name` (default `LOOP-forkN`) from a worktree loop's iteration
        `iteration` (`fork.py`): its branch and worktree at that iteration's commit, its
        conversation as the parent's agent had it then, its own fresh budget, `prompt`
        as its template (default: the parent's). Returns what was done; ControlError
        for an unknown loop or iteration, a loop without a worktree, a name taken."""
        ...

    async def add(
        self,
        name: str,
        *,
        like: str,
        prompt: str | None = None,
        max_iterations: int | None = None,
        limits: Limits | None = None,
    ) -> str:
        """Start a new loop `name` made like the run's loop `like` (`added.py`): its
        agent, workspace kind, checks and budget settings, with its own prompt,
        max_iterations and limits (None: the like-loop's); a worktree loop gets its own
        worktree and branch. Returns what was done; ControlError for an unknown like,
        a name that is invalid or taken (a loop, branch or directory), a bad limit."""
        ...

    async def transcript(
        self, loop: str, *, before: int | None = None, limit: int = 500
    ) -> list[TranscriptLine]:
        """Older transcript lines, oldest first (the last `limit` of the first `before`)."""
        ...

    async def iterations(self, loop: str, *, limit: int = 1000) -> list[IterationSummary]:
        """The loop's iterations in this run (every attempt, the newest `limit`, oldest
        first). ControlError when the run keeps no journal."""
        ...

    async def iteration(self, loop: str, iteration: int) -> IterationDetail:
        """One iteration's prompt, transcript, checks and usage (ControlError when the
        run keeps no journal or the loop has no such iteration)."""
        ...

    async def diff(self, loop: str, *, iteration: int | None = None) -> LoopDiff:
        """A worktree loop's whole diff against its base, or (with `iteration`) that
        iteration's checkpoint commit against its parent; ControlError for a loop
        without a worktree or an iteration the journal does not have."""
        ...

    async def shutdown(self) -> None:
        """End the run: loops still going are stopped, loops waiting for a person keep
        their state, and `run()` returns its summary and exit code as usual."""
        ...
