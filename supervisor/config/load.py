"""loops.toml → a validated `Config`, or a `ConfigError` listing every problem at once.

Each issue names FILE:LINE:COL of the offending key (tomllib gives no positions;
`_tomlpos` finds them in the source) and, for a misspelling, the closest valid
name. Nothing half-valid comes back: either the whole file checks out or nothing
runs. Relative paths are relative to the config file's folder, so a config means
the same thing from any working directory. `--state-dir` (the `state_dir`
argument) is taken as given, i.e. relative to the caller's working directory.

Layout: `_schema` reads typed values, `_agent_tables` the agents (each through its kind's
reader in `supervisor.agents.registry`), `_loops` templates
and loops, `_placeholders` the `$name` checks; this module ties them together.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from types import MappingProxyType

from supervisor import _limits
from supervisor.agents.pricing import price_for
from supervisor.agents.registry import kind_of, rate_limit_providers
from supervisor.config._agent_tables import read_agents
from supervisor.config._loops import LIMIT_KEYS, Paths, read_limits, read_loops
from supervisor.config._notify import read_notify
from supervisor.config._placeholders import line_col
from supervisor.config._schema import ConfigError, ConfigIssue, Issues, Table
from supervisor.diskfull import DEFAULT_GRACE_S
from supervisor.durations import format_duration, parse_duration
from supervisor.sizes import OUTPUT_PER_ITERATION_DEFAULT, format_size
from supervisor.spec import (
    AgentSpec,
    Config,
    Limits,
    LoopSpec,
    NotifySpec,
    Price,
    RateLimit,
    SupervisorSpec,
)

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "load_config",
    "parse_config",
    "parse_duration",
    "starter_toml",
    "summarize_loop",
]

TOP_KEYS = frozenset({"supervisor", "pricing", "agents", "templates", "loop", "redact", "notify"})
REDACT_KEYS = frozenset({"patterns"})
SUPERVISOR_KEYS = frozenset(
    {
        "max_concurrent",
        "state_dir",
        "budget",
        "rate_limits",
        "max_output_per_iteration",
        "disk_full_grace",
        "on_exhausted",
    }
)
PRICE_KEYS = frozenset({"input", "output", "cache_write", "cache_read"})
RATE_LIMIT_KEYS = frozenset({"requests_per_minute", "tokens_per_minute"})
DEFAULT_STATE_DIR = ".loopvisor"
_TOML_AT = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")


def starter_toml() -> str:
    """The commented starter loops.toml written by `loopvisor init` (runs offline). Read
    when asked (also as `STARTER_TOML`): importlib.resources cost every run ~5 ms."""
    from importlib import resources

    return (
        resources.files("supervisor.config")
        .joinpath("templates/starter.toml")
        .read_text(encoding="utf-8")
    )


def __getattr__(name: str) -> str:
    if name == "STARTER_TOML":
        return starter_toml()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_config(path: Path, *, state_dir: Path | None = None) -> Config:
    """Read and validate `path`; raises ConfigError (never another exception) on any problem."""
    try:
        # utf-8-sig: tolerate a byte-order mark
        text = _limits.read_text(path, encoding="utf-8-sig", limit=_limits.MAX_CONFIG_BYTES)
    except (OSError, ValueError) as exc:
        message = f"cannot read config: {_limits.failure(exc)}"
        if isinstance(exc, FileNotFoundError):
            message += " (`loopvisor init` writes a commented starter loops.toml)"
        raise ConfigError([ConfigIssue(path, 1, 1, message)]) from None
    return parse_config(text, path, state_dir=state_dir)


def parse_config(text: str, path: Path, *, state_dir: Path | None = None) -> Config:
    """Validate `text` as the contents of `path` (which anchors relative paths).

    Within the limits of `_limits`, checked first, so that any text ends as a
    Config or a ConfigError quickly and in memory proportional to its size.
    """
    if len(text) > _limits.MAX_CONFIG_BYTES:
        size = _limits.MAX_CONFIG_BYTES
        limit = f"more than {size} characters: the limit is {format_size(size)}"
        raise ConfigError([ConfigIssue(path, 1, 1, limit)])
    beyond = _limits.scan(text)
    if beyond is not None:
        offset, message = beyond
        raise ConfigError([ConfigIssue(path, *line_col(text, offset), message)])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_issue(text, path, exc)]) from None
    issues = Issues(path, text)
    try:
        config_dir = path.resolve().parent
    except (OSError, ValueError) as exc:
        message = f"cannot resolve the config's folder: {_limits.failure(exc)}"
        raise ConfigError([ConfigIssue(path, 1, 1, message)]) from None
    top = Table.of(issues, data, ())
    top.check_keys(TOP_KEYS, "loops.toml")

    supervisor = _supervisor(top, config_dir, state_dir)
    pricing = _pricing(top)
    agents = read_agents(issues, data.get("agents"), config_dir)
    notify = read_notify(_section(top, "notify"), NotifySpec())
    paths = Paths(config_dir=config_dir, state_dir=supervisor.state_dir, notify=notify)
    loops = read_loops(issues, data.get("loop"), data.get("templates"), agents, paths)
    _warn_unpriced(issues, supervisor, loops, agents, pricing)
    redact_patterns = _redact(top)
    if issues.errors:
        raise ConfigError(issues.errors)
    return Config(
        path=path.resolve(),
        supervisor=supervisor,
        agents=agents,
        loops=loops,
        pricing=pricing,
        warnings=tuple(str(w) for w in issues.warnings),
        redact_patterns=redact_patterns,
        notify=notify,
    )


def _syntax_issue(text: str, path: Path, exc: tomllib.TOMLDecodeError) -> ConfigIssue:
    message = str(exc)
    match = _TOML_AT.search(message)
    if match and match.group(1):
        line, col = int(match.group(1)), int(match.group(2))
    else:  # "at end of document"
        lines = text.split("\n")
        line, col = len(lines), len(lines[-1]) + 1
    reason = message[: match.start()] if match else message
    return ConfigIssue(path, line, col, f"invalid TOML: {reason}")


def _section(top: Table, key: str) -> Table | None:
    return top.table(key, label=f"{key}.")


def _supervisor(top: Table, config_dir: Path, override: Path | None) -> SupervisorSpec:
    section = _section(top, "supervisor") or Table(top.issues, {}, ("supervisor",), "supervisor.")
    section.check_keys(SUPERVISOR_KEYS, "[supervisor]")
    state_dir = config_dir / section.string("state_dir", DEFAULT_STATE_DIR, nonempty=True)
    budget = section.table("budget")
    if budget is not None:
        budget.check_keys(LIMIT_KEYS, "[supervisor.budget]")
    rate_limits: dict[str, RateLimit] = {}
    limits_table = section.table("rate_limits")
    if limits_table is not None:
        providers = rate_limit_providers()  # one per provider an agent kind names
        limits_table.check_keys(providers, "[supervisor.rate_limits] (providers)")
        for provider in sorted(providers & set(limits_table.keys())):
            t = limits_table.table(provider)
            if t is not None:
                t.check_keys(RATE_LIMIT_KEYS, f"[supervisor.rate_limits.{provider}]")
                rate_limits[provider] = RateLimit(
                    requests_per_minute=t.integer("requests_per_minute", None, positive=True),
                    tokens_per_minute=t.integer("tokens_per_minute", None, positive=True),
                )
    return SupervisorSpec(
        # Absolute but not resolved: a state dir that is a symbolic link must stay
        # visible as one, so that statedir.ensure_state_dir can refuse it.
        state_dir=Path(os.path.abspath(override if override is not None else state_dir)),
        max_concurrent=section.integer("max_concurrent", 4, positive=True),
        budget=read_limits(budget) if budget is not None else Limits(),
        on_exhausted=section.choice("on_exhausted", ("end", "pause"), "end"),  # type: ignore[arg-type]
        rate_limits=MappingProxyType(rate_limits),
        max_output_per_iteration=section.integer(
            "max_output_per_iteration", OUTPUT_PER_ITERATION_DEFAULT, positive=True
        ),
        disk_full_grace=section.duration("disk_full_grace", DEFAULT_GRACE_S),
    )


def _pricing(top: Table) -> dict[str, Price]:
    """USD per million tokens; cache prices default to Anthropic's usual 1.25x / 0.1x."""
    section = _section(top, "pricing")
    prices: dict[str, Price] = {}
    for model in section.keys() if section else []:
        t = section.table(model, label=f'pricing."{model}".') if section else None
        if t is None:
            continue
        t.check_keys(PRICE_KEYS, f'[pricing."{model}"]')
        has_input = t.require("input", f'price of "{model}"')
        if not t.require("output", f'price of "{model}"') or not has_input:
            continue
        base = t.number("input", 0.0, minimum=0)
        prices[model] = Price(
            input=base,
            output=t.number("output", 0.0, minimum=0),
            cache_write=t.number("cache_write", base * 1.25, minimum=0),
            cache_read=t.number("cache_read", base * 0.1, minimum=0),
        )
    return prices


def _redact(top: Table) -> tuple[str, ...]:
    """`[redact] patterns`: regexes that compile and cannot match an empty string."""
    section = _section(top, "redact")
    if section is None:
        return ()
    section.check_keys(REDACT_KEYS, "[redact]")
    patterns = section.strings("patterns", ())
    for index, pattern in enumerate(patterns):
        at = (*section.at("patterns"), index)
        try:
            empty = re.compile(pattern).fullmatch("") is not None
        except re.error as exc:
            top.issues.error(at, f"redact.patterns[{index}]: invalid regular expression: {exc}")
            continue
        if empty:
            top.issues.error(at, f"redact.patterns[{index}]: matches the empty string")
    return patterns


def _warn_unpriced(
    issues: Issues,
    supervisor: SupervisorSpec,
    loops: tuple[LoopSpec, ...],
    agents: dict[str, AgentSpec],
    pricing: dict[str, Price],
) -> None:
    if supervisor.budget.usd is None and all(loop.budget.limits.usd is None for loop in loops):
        return
    for name, agent in agents.items():
        priced_model = kind_of(agent).priced_model
        model = priced_model(agent) if priced_model is not None else None
        if model is not None and price_for(model, pricing) is None:
            issues.warn(
                ("agents", name, "model"),
                f'model "{model}" of agent "{name}" has no known price: add '
                f'[pricing."{model}"] input = ... output = ... (USD per million tokens); '
                "USD budget enforced from an explicit [pricing] entry only",
            )


def describe_agent(agent: AgentSpec) -> str:
    """`cc(claude-code)`, `sonnet(anthropic claude-sonnet-4-5)`: the agent in a few words
    (its kind's `describe`)."""
    return kind_of(agent).describe(agent)


def _tokens(count: int) -> str:
    if count >= 1_000_000 and count % 100_000 == 0:
        return f"{count / 1_000_000:g}M"
    if count >= 1_000 and count % 100 == 0:
        return f"{count / 1_000:g}k"
    return str(count)


def describe_limits(limits: Limits) -> str:
    """`300k tokens, $3.00, 30m wall, 10m cpu`, or `unlimited`."""
    parts = []
    if limits.tokens is not None:
        parts.append(f"{_tokens(limits.tokens)} tokens")
    if limits.usd is not None:
        parts.append(f"${limits.usd:.2f}")
    if limits.wall is not None:
        parts.append(f"{format_duration(limits.wall)} wall")
    if limits.cpu is not None:
        parts.append(f"{format_duration(limits.cpu)} cpu")
    return ", ".join(parts) or "unlimited"


def summarize_loop(config: Config, loop: LoopSpec) -> str:
    """One line for `loopvisor check`: agent, iterations, checks, budget, how it ends."""
    agent = config.agents.get(loop.agent)
    parts = [
        loop.name,
        f"agent={describe_agent(agent) if agent else loop.agent}",
        f"max_iterations={loop.max_iterations}",
        f"checks={len(loop.checks)}",
        f"budget: {describe_limits(loop.budget.limits)}",
    ]
    exits = []
    if loop.checks:
        exits.append("checks")
    if loop.done_marker:
        exits.append(f'"{loop.done_marker}"')
    parts.append("exit: " + " + ".join(exits))
    if loop.extends:
        parts.append(f"extends={loop.extends}")
    if loop.worktree is not None:
        base = f"@{loop.worktree.base}" if loop.worktree.base else ""
        parts.append(f"worktree={loop.worktree.repo.name}{base}")
        if loop.setup:
            parts.append(f"setup={len(loop.setup)}")
        if loop.on_success != "keep":
            parts.append(f"on_success={loop.on_success}")
    if loop.schedule:
        runs = f" x{loop.max_runs}" if loop.max_runs else ""
        parts.append(f"schedule={loop.schedule!r}{runs}")
    if loop.on_stuck != "pause":
        parts.append(f"on_stuck={loop.on_stuck}")
    if loop.on_exhausted != "end":
        parts.append(f"on_exhausted={loop.on_exhausted}")
    return "  ".join(parts)
