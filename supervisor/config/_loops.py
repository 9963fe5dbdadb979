"""`[templates.*]` and `[[loop]]` tables to LoopSpecs.

A loop is its template chain merged with its own keys: later layers replace earlier
ones, except `budget` and `stuck`, which merge key by key, and `prompt` /
`prompt_file`, which replace each other. Every merged value remembers the key that
wrote it, so an error inherited from a template points at the template.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from supervisor._limits import MAX_EXTENDS_DEPTH
from supervisor.config._notify import read_notify
from supervisor.config._pipeline import check_pipelines, read_after
from supervisor.config._race import expand_races, read_race
from supervisor.config._schema import (
    Entry,
    Issues,
    Nested,
    Table,
    describe,
    did_you_mean,
    entries,
    name_problem,
    read_child_env,
    read_file,
)
from supervisor.config._score import check_scores, read_score
from supervisor.config._workspace import (
    read_on_success,
    read_push_remote,
    read_setup,
    read_workspace,
)
from supervisor.config.rules import loop_name_problem, prompt_problems
from supervisor.gitident import author_problem
from supervisor.schedule import Schedule
from supervisor.spec import (
    AgentSpec,
    CheckSpec,
    Limits,
    LoopBudget,
    LoopSpec,
    NotifySpec,
    StuckSpec,
)

LOOP_KEYS = frozenset(f.name for f in fields(LoopSpec)) - {"worktree", "attempt_of"}
TEMPLATE_KEYS = LOOP_KEYS - {"name"}
LIMIT_KEYS = frozenset(f.name for f in fields(Limits))
BUDGET_KEYS = LIMIT_KEYS | {"retries"}
STUCK_KEYS = frozenset(f.name for f in fields(StuckSpec))
CHECK_KEYS = frozenset(f.name for f in fields(CheckSpec))
MERGED_TABLES = frozenset({"budget", "stuck", "notify"})
_RUNNERS = frozenset({"cargo", "go", "make", "npm", "pnpm", "yarn", "just", "tox", "nox", "uv"})


@dataclass(frozen=True, slots=True)
class Paths:
    config_dir: Path
    """Absolute folder of the config file: relative paths start here."""
    state_dir: Path
    notify: NotifySpec = field(default_factory=NotifySpec)
    """The run's `[notify]`: what a loop's own table is merged onto."""


def read_limits(t: Table) -> Limits:
    """tokens / usd / wall / cpu; every limit must be greater than 0 when given."""
    return Limits(
        tokens=t.integer("tokens", None, positive=True),
        usd=t.number("usd", None, positive=True),
        wall=t.duration("wall", None),
        cpu=t.duration("cpu", None),
    )


def read_loops(
    issues: Issues,
    raw_loops: object,
    raw_templates: object,
    agents: Mapping[str, AgentSpec],
    paths: Paths,
) -> tuple[LoopSpec, ...]:
    templates = _template_tables(issues, raw_templates)
    chains = _template_chains(issues, templates)
    if raw_loops is None:
        issues.error((), "no loops defined: add a [[loop]] table with name, agent and prompt")
        return ()
    if not isinstance(raw_loops, list):
        issues.error(("loop",), f"loop: expected [[loop]] tables, got {describe(raw_loops)}")
        return ()
    loops: list[tuple[Table, LoopSpec]] = []
    seen: set[str] = set()
    branches: dict[tuple[Path, str], str] = {}
    for index, raw in enumerate(raw_loops):
        at = ("loop", index)
        if not isinstance(raw, dict):
            issues.error(at, f"loop[{index}]: expected a table, got {describe(raw)}")
            continue
        own = Table.of(issues, raw, at)
        own.check_keys(LOOP_KEYS, "[[loop]]")
        _check_prompt_pair(own)
        name = _loop_name(own, index, seen)
        layers: list[Table] | None = []
        if "extends" in own:
            base = own.string("extends", None)
            if base is not None and base not in templates:
                own.error("extends", f'unknown template "{base}"{did_you_mean(base, templates)}')
            layers = chains.get(base) if base is not None else None
        if layers is not None:
            merged = Table(issues, _merge([*layers, own]), at)
            loops.append((merged, loop := _loop(merged, name, agents, paths)))
            _check_branch(merged, loop, branches)
    checked = [(t, s) for (t, _), s in zip(loops, check_pipelines(loops), strict=True)]
    return tuple(spec for _, spec in expand_races(checked))


def _check_branch(t: Table, loop: LoopSpec, branches: dict[tuple[Path, str], str]) -> None:
    """Git checks a branch out in one worktree at a time: two loops cannot share one."""
    if loop.worktree is None:
        return
    key = (loop.worktree.repo, loop.worktree.branch.replace("{loop}", loop.name))
    if key in branches:
        ws = t.table("workspace")
        where = ws.at("branch") if ws is not None else t.at("workspace")
        t.issues.error(
            where,
            f'workspace.branch: loops "{branches[key]}" and "{loop.name}" would share the '
            f'worktree branch "{key[1]}" of {key[0]}: put {{loop}} in the branch name',
        )
    branches.setdefault(key, loop.name)


def _template_tables(issues: Issues, raw: object) -> dict[str, Table]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        issues.error(("templates",), f"templates: expected a table, got {describe(raw)}")
        return {}
    tables = {}
    for name, value in raw.items():
        at = ("templates", name)
        problem = name_problem(name)
        if problem is not None:
            issues.error(at, f'template name "{name}" {problem}')
            continue
        if not isinstance(value, dict):
            issues.error(at, f"templates.{name}: expected a table, got {describe(value)}")
            continue
        tables[name] = table = Table.of(issues, value, at)
        table.check_keys(TEMPLATE_KEYS, f'template "{name}"')
        _check_prompt_pair(table)
    return tables


def _template_chains(issues: Issues, templates: dict[str, Table]) -> dict[str, list[Table] | None]:
    """Each template's layers, base first; None when its extends chain is broken, cyclic
    or longer than MAX_EXTENDS_DEPTH.

    Each template is walked once: a walk stops at the first template whose chain is
    known, so a 5,000-template chain costs 5,000 steps, not 5,000 walks of it.
    """
    chains: dict[str, list[Table] | None] = {}
    for start in templates:
        walked: dict[str, None] = {}  # insertion-ordered: the walk, start first
        current: str | None = start
        tail: list[Table] | None = []
        while current is not None and current not in chains:
            if current in walked:
                cycle = [*list(walked)[list(walked).index(current) :], current]
                issues.error(
                    templates[current].at("extends"),
                    "extends: cyclic extends: " + " -> ".join(cycle),
                )
                tail = None
                break
            walked[current] = None
            current, broken = _base(templates[current], templates)
            if broken:
                tail = None
        if current is not None and current in chains:
            tail = chains[current]
        for name in reversed(walked):
            if tail is not None:
                tail = [*tail, templates[name]]
                if len(tail) > MAX_EXTENDS_DEPTH:
                    templates[name].error(
                        "extends",
                        f"a chain of more than {MAX_EXTENDS_DEPTH} templates: "
                        f"the limit is {MAX_EXTENDS_DEPTH}",
                    )
                    tail = None
            chains[name] = tail
    return chains


def _base(table: Table, templates: Mapping[str, Table]) -> tuple[str | None, bool]:
    """The template `table` extends (None at a chain's root), and whether that is broken."""
    if "extends" not in table:
        return None, False
    base = table.string("extends", None)
    if base is None or base not in templates:
        if base is not None:
            table.error("extends", f'unknown template "{base}"{did_you_mean(base, templates)}')
        return None, True
    return base, False


def _check_prompt_pair(t: Table) -> None:
    if "prompt" in t and "prompt_file" in t:
        t.error("prompt_file", "use either prompt or prompt_file, not both")


def _merge(layers: list[Table]) -> dict[str, Entry]:
    merged: dict[str, Entry] = {}
    for layer in layers:
        for key, (value, at) in layer.items.items():
            if key == "name" and layer is not layers[-1]:
                continue
            if key in ("prompt", "prompt_file"):
                merged.pop("prompt", None)
                merged.pop("prompt_file", None)
            previous = merged.get(key)
            if key in MERGED_TABLES and isinstance(value, dict):
                table = (
                    Nested(previous[0])
                    if previous and isinstance(previous[0], Nested)
                    else Nested()
                )
                table.update(entries(value, at))
                merged[key] = (table, at)
            else:
                merged[key] = (value, at)
    return merged


def _loop_name(t: Table, index: int, seen: set[str]) -> str:
    fallback = f"loop-{index + 1}"
    if not t.require("name", f"loop #{index + 1}"):
        return fallback
    name = t.string("name", None)
    if name is None:
        return fallback
    problem = loop_name_problem(name)
    if problem is not None:
        t.error("name", problem)
    elif name in seen:
        t.error("name", f'duplicate loop name "{name}"')
    seen.add(name)
    return name


def _loop(t: Table, name: str, agents: Mapping[str, AgentSpec], paths: Paths) -> LoopSpec:
    what = f'loop "{name}"'
    agent = ""
    if t.require("agent", what):
        agent = t.string("agent", "")
        if agent and agent not in agents:
            hint = did_you_mean(agent, agents) or (
                " (defined agents: " + ", ".join(agents) + ")" if agents else " (no agents defined)"
            )
            t.error("agent", f'unknown agent "{agent}"{hint}')
    prompt, prompt_file = _prompt(t, what, paths)
    workspace, worktree = read_workspace(t, name, paths)
    checks = _checks(t)
    check_scores(t, checks, worktree is not None)
    done_marker = t.string("done_marker", None, nonempty=True)
    if not t.raw("checks") and "done_marker" not in t:
        t.issues.error(t.path, f"{what} has no exit condition: add checks or a done_marker")
    schedule = _schedule(t)
    for key in ("max_runs", "catch_up"):
        if key in t and "schedule" not in t:
            t.issues.warn(t.at(key), f"{key} has no effect without a schedule")
    budget = t.table("budget")
    stuck = t.table("stuck")
    notify = t.table("notify")
    race, race_agents, race_deadline = read_race(t, agents, worktree is not None)
    return LoopSpec(
        name=name,
        agent=agent,
        prompt=prompt,
        workspace=workspace,
        max_iterations=t.integer("max_iterations", 10, positive=True),
        context=t.choice("context", ("fresh", "continue"), "fresh"),  # type: ignore[arg-type]
        budget=_budget(budget) if budget else LoopBudget(),
        checks=checks,
        done_marker=done_marker,
        on_stuck=t.choice("on_stuck", ("pause", "stop", "continue"), "pause"),  # type: ignore[arg-type]
        on_exhausted=t.choice("on_exhausted", ("end", "pause"), "end"),  # type: ignore[arg-type]
        stuck=_stuck(stuck) if stuck else StuckSpec(),
        worktree=worktree,
        schedule=schedule,
        max_runs=t.integer("max_runs", None, positive=True),
        catch_up=t.choice("catch_up", ("skip", "once"), "skip"),  # type: ignore[arg-type]
        extends=t.string("extends", None),
        prompt_file=prompt_file,
        commit_author=_commit_author(t),
        setup=read_setup(t, worktree),
        on_success=(on_success := read_on_success(t, worktree)),
        push_remote=read_push_remote(t, on_success),
        notify=read_notify(notify, paths.notify, loop=True) if notify else None,
        after=read_after(t),
        on_failure=t.choice("on_failure", ("skip", "run"), "skip"),  # type: ignore[arg-type]
        race=race,
        agents=race_agents,
        race_deadline=race_deadline,
    )


def _commit_author(t: Table) -> str | None:
    author = t.string("commit_author", None, nonempty=True)
    if author is not None and (problem := author_problem(author)) is not None:
        t.error("commit_author", problem)
        return None
    return author


def _prompt(t: Table, what: str, paths: Paths) -> tuple[str, Path | None]:
    if "prompt" in t:
        prompt = t.string("prompt", "", nonempty=True)  # empty: said here already
        for problem in prompt_problems(prompt, empty_ok=True):
            if problem.line is None:  # too large: nothing else was looked at
                t.error("prompt", problem.message)
                return "", None
            where = f" (line {problem.line} of the prompt)" if "\n" in prompt.strip() else ""
            t.error("prompt", f"{problem.message}{where}")
        return prompt, None
    if "prompt_file" not in t:
        t.issues.error(t.path, f"{what} has no prompt: add prompt or prompt_file")
        return "", None
    found = read_file(t, "prompt_file", paths.config_dir)
    if found is None:
        return "", None
    path, prompt = found
    if not prompt.strip():
        t.error("prompt_file", f'"{t.raw("prompt_file")}" is empty')
    shown = t.issues.file.parent / str(t.raw("prompt_file"))
    for problem in prompt_problems(prompt, empty_ok=True):
        if problem.line is None or problem.column is None:  # (read no further than the limit)
            t.error("prompt_file", problem.message)
        else:
            t.issues.error_in(shown, problem.line, problem.column, problem.message)
    return prompt, path.resolve()


def _checks(t: Table) -> tuple[CheckSpec, ...]:
    raw = t.raw("checks")
    if "checks" not in t:
        return ()
    if not isinstance(raw, list):
        t.type_error("checks", 'an array of tables like [{ run = "pytest -q" }]')
        return ()
    checks: list[CheckSpec] = []
    names: dict[str, int] = {}  # name -> the next suffix to try for it
    for index, item in enumerate(raw):
        at = (*t.at("checks"), index)
        label = f"checks[{index}]."
        if not isinstance(item, dict):
            t.issues.error(
                at,
                f'checks[{index}]: expected a table like {{ run = "pytest -q" }}, '
                f"got {describe(item)}",
            )
            continue
        c = Table.of(t.issues, item, at, label)
        c.check_keys(CHECK_KEYS, f"checks[{index}]")
        run: str | tuple[str, ...] = ""
        if c.require("run", f"checks[{index}]"):
            if isinstance(c.raw("run"), list):
                run = c.strings("run", (), nonempty=True)
            else:
                run = c.string("run", "", nonempty=True)
        for key in ("pattern", "not_pattern"):
            _regex(c, key)
        name = c.string("name", None, nonempty=True)
        if name is not None and name in names:
            c.error("name", f'duplicate check name "{name}"')
        name = name or _unique(_default_check_name(run), names)
        names.setdefault(name, 2)
        env, pass_env = read_child_env(c)
        checks.append(
            CheckSpec(
                name=name,
                run=run,
                expect_exit=c.integer("expect_exit", 0),
                timeout=c.duration("timeout", 300.0),
                min_passed=c.integer("min_passed", None, minimum=0),
                pattern=c.string("pattern", None),
                not_pattern=c.string("not_pattern", None),
                env=env,
                pass_env=pass_env,
                score=read_score(c),
            )
        )
    return tuple(checks)


def _regex(c: Table, key: str) -> None:
    pattern = c.string(key, None)
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            c.error(key, f"invalid regular expression: {exc}")
        except (RecursionError, OverflowError):  # the parser recurses per group
            c.error(key, "invalid regular expression: nested too deeply")


def _default_check_name(run: str | tuple[str, ...]) -> str:
    """ "pytest -q" → "pytest"; "python -m mypy ." → "mypy"; "npm test" → "npm test"."""
    try:
        words = list(run) if isinstance(run, tuple) else shlex.split(run)
    except ValueError:
        words = str(run).split()
    words = [w for w in words if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", w)]
    if not words:
        return "check"
    first = Path(words[0]).name
    if first.startswith("python") and len(words) > 2 and words[1] == "-m":
        return words[2]
    if first in _RUNNERS and len(words) > 1 and not words[1].startswith("-"):
        return f"{first} {words[1]}"
    return first


def _unique(name: str, taken: dict[str, int]) -> str:
    """`name`, else `name-2`, `name-3`...: the suffix search resumes where it
    stopped, so 20,000 unnamed `pytest` checks cost 20,000 steps, not 200 million."""
    if name not in taken:
        return name
    n = taken[name]
    while f"{name}-{n}" in taken:
        n += 1
    taken[name] = n + 1
    return f"{name}-{n}"


def _budget(t: Table) -> LoopBudget:
    t.check_keys(BUDGET_KEYS, "budget")
    return LoopBudget(limits=read_limits(t), retries=t.integer("retries", 3, minimum=0))


def _stuck(t: Table) -> StuckSpec:
    t.check_keys(STUCK_KEYS, "stuck")
    d = StuckSpec()
    cost_spike = d.cost_spike
    if "cost_spike" in t and t.raw("cost_spike") is False:
        cost_spike = None
    else:
        cost_spike = t.number("cost_spike", d.cost_spike)
        if cost_spike is not None and cost_spike <= 1:
            t.error(
                "cost_spike",
                f"must be greater than 1 (a multiple of the median), or false, got {cost_spike:g}",
            )
    return StuckSpec(
        same_failure=t.integer("same_failure", d.same_failure, minimum=0),
        same_output=t.integer("same_output", d.same_output, minimum=0),
        similarity=t.number("similarity", d.similarity, positive=True, maximum=1),
        oscillation=t.boolean("oscillation", d.oscillation),
        stall=t.duration("stall", d.stall, off=True),
        cost_spike=cost_spike,
    )


def _schedule(t: Table) -> str | None:
    expr = t.string("schedule", None, nonempty=True)
    if expr is not None:
        try:
            Schedule.parse(expr)
        except ValueError as exc:
            t.error("schedule", str(exc))
    return expr
