"""Frozen, validated description of a run: what `config.load` produces from loops.toml.

Everything here is plain data with no behaviour beyond small derived values, so a
spec can be compared, hashed, journalled and sent over the control socket as is.
Durations are seconds (float); money is USD (float); token counts are ints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal, Protocol, TypeAlias

from supervisor.diskfull import DEFAULT_GRACE_S
from supervisor.sizes import OUTPUT_PER_ITERATION_DEFAULT

ContextMode: TypeAlias = Literal["fresh", "continue"]
OnStuck: TypeAlias = Literal["pause", "stop", "continue"]
OnExhausted: TypeAlias = Literal["end", "pause"]
"""What a spent budget does: end the loop `exhausted`, or pause it (state `paused`,
cause "budget") until a person raises the limit (`ctl edit`, `ctl budget`, the console)."""
CatchUp: TypeAlias = Literal["skip", "once"]
OnFailure: TypeAlias = Literal["skip", "run"]
"""What a pipeline loop (`after`) does when a loop it follows did not succeed."""
OnSuccess: TypeAlias = Literal["keep", "land", "push", "pr"]
ON_SUCCESS: tuple[OnSuccess, ...] = ("keep", "land", "push", "pr")
"""What a worktree loop does with its branch once it succeeded (`land`)."""
WebhookFormat: TypeAlias = Literal["json", "slack", "ntfy"]
WEBHOOK_FORMATS: tuple[WebhookFormat, ...] = ("json", "slack", "ntfy")
ALERT_KINDS = ("attention", "failed", "exhausted", "budget", "finished")
"""What `[notify] events` may list (`alerts.AlertKind` without the test message)."""

PLACEHOLDERS = frozenset(
    {
        "iteration",
        "max_iterations",
        "check_output",
        "last_output",
        "loop",
        "workspace",
        "score_history",
        "after_output",
    }
)
"""The `$name` placeholders a prompt template may use."""


def empty_map() -> Mapping[str, str]:
    """An empty read-only mapping: the default of every spec's `env` table."""
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits of one ledger; None means unlimited in that dimension."""

    tokens: int | None = None
    usd: float | None = None
    wall: float | None = None
    cpu: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """As JSON data (the wire's and the journal's form)."""
        return {"tokens": self.tokens, "usd": self.usd, "wall": self.wall, "cpu": self.cpu}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Limits:
        """From `to_dict()` output; unknown keys are ignored."""
        return cls(**{k: data[k] for k in ("tokens", "usd", "wall", "cpu") if k in data})


@dataclass(frozen=True, slots=True)
class LoopBudget:
    """A loop's own limits, checked together with the global ones."""

    limits: Limits = Limits()
    retries: int = 3
    """Agent errors (crash, non-zero exit, 429 after backoff) tolerated before failing."""


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens for one model."""

    input: float
    output: float
    cache_write: float
    cache_read: float


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Requests and tokens per minute one provider may receive from this supervisor."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


class AgentSpec(Protocol):
    """What every agent kind's spec has: `[agents.NAME]` read by its kind's reader.

    The spec dataclasses live with their kinds (`supervisor/agents/kinds/`), so that a
    new kind is one new file; `supervisor.agents.registry` maps `kind` to the kind.
    Like every spec they are frozen dataclasses (compared, hashed, journalled as is).
    """

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...


ScoreDirection: TypeAlias = Literal["max", "min"]


@dataclass(frozen=True, slots=True)
class ScoreSpec:
    """A check's score (`score = { ... }`): a number read from its output (`pattern`,
    whose first group is the number) or from a JSON file it wrote (`json`, relative to
    the workspace, and `key`, dotted for nested objects). The loop keeps an iteration
    only when the score improves on the best so far (`score.py`)."""

    pattern: str | None = None
    json: str | None = None
    key: str | None = None
    direction: ScoreDirection = "max"
    target: float | None = None
    """The loop succeeds once the best score reaches it (>= for max, <= for min)."""
    plateau: int | None = None
    """The loop succeeds after this many iterations in a row without an improvement."""


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """A validator the supervisor runs in the workspace after each agent turn."""

    name: str
    run: str | tuple[str, ...]
    """A shell string (written by the operator) or an argv list."""
    expect_exit: int = 0
    timeout: float = 300.0
    min_passed: int | None = None
    pattern: str | None = None
    not_pattern: str | None = None
    env: Mapping[str, str] = field(default_factory=empty_map)
    """Set for its process on top of the allow-listed environment (`childenv`)."""
    pass_env: tuple[str, ...] = ()
    """Variables of the supervisor's environment it inherits beyond the allow-list."""
    score: ScoreSpec | None = None
    """Makes the loop a metric loop (`score.py`); at most one check of a loop has one."""

    @property
    def display(self) -> str:
        return self.run if isinstance(self.run, str) else " ".join(self.run)


@dataclass(frozen=True, slots=True)
class StuckSpec:
    """Thresholds of the stuck detectors; 0 / None turns one off."""

    same_failure: int = 3
    same_output: int = 3
    similarity: float = 0.95
    oscillation: bool = True
    stall: float | None = 120.0
    cost_spike: float | None = 5.0


@dataclass(frozen=True, slots=True)
class WorktreeSpec:
    """A git worktree per loop, created under the state dir (`worktree`)."""

    repo: Path
    branch: str = "loopvisor/{loop}"
    base: str | None = None
    """What the branch starts from: a branch, tag, commit or `origin/...`; None: the
    repo's HEAD. Recorded with the branch, so `land` knows where it goes back to."""
    include_uncommitted: bool = False
    """Copy the repo's uncommitted changes (tracked, and untracked files not ignored)
    into the worktree as its first commit, instead of refusing a dirty repo."""
    after_loop: str | None = None
    """`base = "loop:NAME"`: the loop whose branch `base` is; the worktree is made when
    that loop has ended (`pipeline.py`), not before the run."""


@dataclass(frozen=True, slots=True)
class NotifySpec:
    """`[notify]`: where a person hears about a loop that needs them (`supervisor.notify`).

    The run's table, or a loop's (`[loop.notify]`, merged key by key onto the run's).
    `webhook` is a secret (a Slack or ntfy URL is its own credential): the redactor
    knows it (`redact.Redactor.for_config`), so it is never journalled or printed.
    """

    bell: bool = True
    """The console (TUI, attached or not) rings the terminal bell."""
    desktop: bool = False
    """notify-send where it is installed (off, said once, where it is not)."""
    webhook: str | None = None
    format: WebhookFormat = "json"
    command: tuple[str, ...] = ()
    """argv of a program that gets the JSON message on stdin."""
    events: tuple[str, ...] = ALERT_KINDS
    timeout: float = 10.0
    """Seconds one delivery attempt may take (a webhook request, the command)."""
    retries: int = 3
    """Attempts after the first one failed, with backoff."""
    coalesce: float = 2.0
    """Seconds alerts are gathered before sending: a burst becomes one message."""

    @property
    def channels(self) -> tuple[str, ...]:
        """The delivering channels it configures (the bell is the console's)."""
        named = (("desktop", self.desktop), ("webhook", bool(self.webhook)))
        return (*(n for n, on in named if on), *(("command",) if self.command else ()))


@dataclass(frozen=True, slots=True)
class LoopSpec:
    """One loop: agent, prompt, exit conditions and limits."""

    name: str
    agent: str
    prompt: str
    workspace: Path
    max_iterations: int = 10
    context: ContextMode = "fresh"
    budget: LoopBudget = LoopBudget()
    checks: tuple[CheckSpec, ...] = ()
    done_marker: str | None = None
    on_stuck: OnStuck = "pause"
    on_exhausted: OnExhausted = "end"
    """When the loop's own budget is spent (the global one follows [supervisor])."""
    stuck: StuckSpec = StuckSpec()
    worktree: WorktreeSpec | None = None
    schedule: str | None = None
    max_runs: int | None = None
    catch_up: CatchUp = "skip"
    extends: str | None = None
    prompt_file: Path | None = None
    commit_author: str | None = None
    """`Name <email>` of a worktree loop's checkpoint commits (`checkpoint.py`);
    None: `loopvisor <loopvisor@localhost>`."""
    setup: tuple[CheckSpec, ...] = ()
    """Commands run once in a new worktree before the first iteration (like checks:
    own process group, allow-listed environment); a failure fails the loop."""
    on_success: OnSuccess = "keep"
    """What a worktree loop does with its branch once it succeeded (`land`)."""
    push_remote: str | None = None
    """The remote `on_success = "push"` or `"pr"` pushes to; None: origin."""
    notify: NotifySpec | None = None
    """Its own `[loop.notify]` (merged onto the run's), None: the run's `[notify]`."""
    after: tuple[str, ...] = ()
    """Loops this one starts after (a pipeline, `pipeline.py`): it waits until they ended."""
    on_failure: OnFailure = "skip"
    """When one of `after` did not succeed: skip this loop (it ends `stopped`) or run it."""
    race: int = 0
    """Attempts of a race (`race.py`): that many loops `NAME.1`… from the same base, the
    first to pass wins; 0: not a race."""
    agents: tuple[str, ...] = ()
    """A race's agent per attempt (`race` is then their count); (): each runs `agent`."""
    race_deadline: float | None = None
    """Seconds a race may take: then its attempts are cut off and it is decided."""
    attempt_of: str | None = None
    """The race loop this loop is an attempt of (made by config, not written in it)."""

    @property
    def score(self) -> ScoreSpec | None:
        """The score of a metric loop (its one check with `score`); None otherwise."""
        return next((c.score for c in self.checks if c.score is not None), None)


@dataclass(frozen=True, slots=True)
class SupervisorSpec:
    """Run-wide settings: concurrency, state directory and the global hard budget."""

    state_dir: Path
    max_concurrent: int = 4
    budget: Limits = Limits()
    on_exhausted: OnExhausted = "end"
    """When the global budget is spent: end every loop (exit 2) or pause them all."""
    max_output_per_iteration: int = OUTPUT_PER_ITERATION_DEFAULT
    """Bytes of agent output journalled and shown in full per iteration (`sizes`)."""
    rate_limits: Mapping[str, RateLimit] = field(default_factory=dict)
    disk_full_grace: float = DEFAULT_GRACE_S
    """How long a full disk under the state dir is waited out before exit 5."""


@dataclass(frozen=True, slots=True)
class Config:
    """A whole validated loops.toml."""

    path: Path
    supervisor: SupervisorSpec
    agents: Mapping[str, AgentSpec]
    loops: tuple[LoopSpec, ...]
    pricing: Mapping[str, Price] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    redact_patterns: tuple[str, ...] = ()
    """`[redact] patterns`: regexes whose matches never leave the core (`redact`)."""
    notify: NotifySpec = NotifySpec()
    text: str | None = field(default=None, compare=False)
    """The TOML it was read from when that is no file (`run -p ...`, the one-line loop)."""

    def loop(self, name: str) -> LoopSpec:
        for spec in self.loops:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def agent_for(self, loop: LoopSpec) -> AgentSpec:
        return self.agents[loop.agent]

    def notify_for(self, loop: str | None) -> NotifySpec:
        """A loop's notification settings (the run's for None or an unknown loop)."""
        spec = next((s for s in self.loops if s.name == loop), None)
        return spec.notify if spec is not None and spec.notify is not None else self.notify

    def notify_specs(self) -> tuple[NotifySpec, ...]:
        """Every distinct `[notify]` of the run, the run's own first."""
        found = dict.fromkeys([self.notify, *(s.notify for s in self.loops if s.notify)])
        return tuple(found)


def edited(
    spec: LoopSpec,
    *,
    prompt: str | None = None,
    max_iterations: int | None = None,
    limits: Limits | None = None,
) -> LoopSpec:
    """`spec` with an operator's edit (None: that key unchanged): the one way an edit
    is applied, live (`edit`), on `--resume` and by the `add` op."""
    changes: dict[str, Any] = {}
    if prompt is not None:
        changes["prompt"] = prompt
    if max_iterations is not None:
        changes["max_iterations"] = max_iterations
    if limits is not None:
        changes["budget"] = replace(spec.budget, limits=limits)
    return replace(spec, **changes) if changes else spec
