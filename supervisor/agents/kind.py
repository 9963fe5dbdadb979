"""What an agent kind declares: one `AgentKind` per kind, listed in `registry`.

A kind is everything loopvisor knows about `kind = "..."`: its spec dataclass, how its
`[agents.NAME]` table is read, how its agent is built, and what it can do beyond a
turn (step-in chat, a command that resumes its session in a terminal, the provider
whose rate limits it shares, the environment its process needs). Config, the
runtime (step-in, rate limiters) and `build_agent` ask the kind instead of testing
for spec classes, so adding a kind touches no file but its own and the registry.

A kind's declaration module must stay cheap to import (config imports every kind to
read loops.toml): the implementation is imported inside `build`, so that a run with
no `anthropic` loop never loads the anthropic SDK.

The reader gets a `TableReader`, the part of config's table API a kind may use, so
that agents never import `supervisor.config`: config reads the registry, not the
other way round. Each getter records a problem (FILE:LINE:COL) and returns the
default, so that one pass reports every problem of a file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Literal, Protocol, TypeVar, overload

from supervisor.agents.base import Agent
from supervisor.redact import Redactor
from supervisor.spec import AgentSpec, LoopSpec, Price

if TYPE_CHECKING:
    from supervisor.agents.ratelimit import RateLimiterRegistry

S = TypeVar("S", bound=AgentSpec)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AgentContext:
    """Run-wide things an agent may need besides its own spec."""

    state_dir: Path
    pricing: Mapping[str, Price] = field(default_factory=dict)
    limiters: RateLimiterRegistry | None = None
    redactor: Redactor = field(default_factory=Redactor.from_environment)
    """Secrets never kept in a conversation or sent back to a model (`redact`)."""


class TableReader(Protocol):
    """Typed reading of one `[agents.NAME]` table (config's `Table` implements it).

    Every method records what is wrong at the key's position in the file and returns
    the default, so a reader just reads every key and builds its spec.
    """

    def __contains__(self, key: str) -> bool: ...

    def require(self, key: str, what: str) -> bool:
        """True if `key` is present; else records "`what`: missing required key"."""
        ...

    def error(self, key: str, message: str) -> None:
        """An error at `key`, reported as "key: message"."""
        ...

    def item_error(self, key: str, index: int, message: str) -> None:
        """An error at item `index` of the array at `key` ("key[index]: message")."""
        ...

    def warn(self, key: str, message: str) -> None:
        """A warning at `key` (the message as given)."""
        ...

    def integer(
        self, key: str, default: T, *, positive: bool = False, minimum: int | None = None
    ) -> int | T: ...

    def number(
        self,
        key: str,
        default: T,
        *,
        positive: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float | T: ...

    def string(self, key: str, default: T, *, nonempty: bool = False) -> str | T: ...

    def boolean(self, key: str, default: T) -> bool | T: ...

    @overload
    def duration(self, key: str, default: float, *, off: Literal[False] = False) -> float: ...
    @overload
    def duration(self, key: str, default: float | None, *, off: bool = False) -> float | None: ...
    def duration(self, key: str, default: float | None, *, off: bool = False) -> float | None:
        """Seconds > 0 from `"90s"`, `"2m"`, a number; with `off`, `false` is None."""
        ...

    def choice(self, key: str, choices: Collection[str], default: T) -> str | T: ...

    def strings(self, key: str, default: T, *, nonempty: bool = False) -> tuple[str, ...] | T: ...

    def string_map(self, key: str) -> Mapping[str, str]: ...

    def choices(
        self, key: str, allowed: Collection[str], default: tuple[str, ...], *, noun: str
    ) -> tuple[str, ...]:
        """An array of strings, each one of `allowed` (`key: unknown NOUN "x"` otherwise)."""
        ...

    def placeholders(
        self, key: str, values: Sequence[str], allowed: frozenset[str]
    ) -> list[set[str]]:
        """The `$name`s each of `values` (the items of the array at `key`) refers to;
        an unknown name or a stray `$` is an error at its item."""
        ...

    def child_env(self) -> tuple[Mapping[str, str], tuple[str, ...]]:
        """`env = {NAME = "value"}` and `pass_env = ["NAME", "PREFIX*"]`, checked."""
        ...

    def file_text(self, key: str) -> str | None:
        """The text of the file (relative to the config's folder) named at `key`."""
        ...


def _plain(spec: AgentSpec) -> str:
    return f"{spec.name}({spec.kind})"


@dataclass(frozen=True, slots=True)
class AgentKind(Generic[S]):
    """One agent kind: its spec, its reader, its factory and its abilities."""

    name: str
    """The `kind = "..."` value (and every spec's `kind`)."""
    spec: type[S]
    """A frozen dataclass with `name` and `kind`; its other fields are the table's keys."""
    read: Callable[[TableReader, str], S]
    """`[agents.NAME]` to a spec (`kind` and unknown keys are checked before)."""
    build: Callable[[S, LoopSpec, AgentContext], Agent]
    """The agent of one loop. Imports the implementation, so that it loads only when
    a loop uses the kind."""
    describe: Callable[[S], str] = _plain
    """`name(kind detail)` in `loopvisor check`'s summary of a loop."""
    extra_keys: frozenset[str] = frozenset()
    """Keys the table accepts beyond the spec's fields (`system_file`)."""
    chat: bool = False
    """Step-in can talk to the agent in the TUI (an operator turn on the loop's agent)."""
    resume_argv: Callable[[S, str | None], tuple[str, ...]] | None = None
    """Step-in's command to continue the agent's session (the session id, if any)."""
    fork_flags: Callable[[str | None], tuple[str, ...]] | None = None
    """The flags that fork the session the agent resumes, cut after a message (its id,
    if any): added to `resume_argv` while the session is another loop's that this one
    forks (`ForksSessions.forking`, `.fork_at`), so the operator's turns do not land in
    the parent's session."""
    rate_limit_provider: str | None = None
    """The `[supervisor.rate_limits]` table whose limiter the kind's requests share."""
    child_env: tuple[str, ...] = ()
    """Variables (`NAME` or `PREFIX*`) its process inherits beyond the allow-list."""
    priced_model: Callable[[S], str | None] | None = None
    """The `model` whose `[pricing]` entry a USD budget needs (the kind reports tokens
    only); a model without a known price is a warning when a USD budget is set."""

    binary: Callable[[S], str | None] | None = None
    """The program the kind runs (`claude`, a command's argv[0]), which `loopvisor
    check` looks for on PATH (a path with a slash: relative to the loop's workspace)
    and warns about when it is missing. None: the kind runs no program of its own."""
    install_hint: str = ""
    """How to get the program (`npm install -g ...`), said with that warning."""

    def keys(self) -> frozenset[str]:
        """The keys `[agents.X]` accepts for this kind."""
        fields = {f.name for f in dataclasses.fields(self.spec)} - {"name"}
        return frozenset(fields) | self.extra_keys
