"""Races (best-of-N): `race = 3`, or `agents = ["cc", "api"]` (one attempt per agent),
and `race_deadline`, read and expanded into their attempts.

A race loop `fix` becomes itself (the race: no agent of its own runs in it) and one
loop per attempt, `fix.1`, `fix.2`, … (`spec.attempt_of = "fix"`), each a worktree
loop on the race's branch pattern (`loopvisor/fix.1`: a branch `loopvisor/fix/1`
could not sit beside `loopvisor/fix`, which git keeps as a file) from the race's
base, with `on_success = "keep"`: what the race does with the winner is the race
loop's `on_success`. Unsupported, and said so at the key: a race without a git
worktree (there would be nothing to pick a winner's work from), with `after`, a
workspace `base = "loop:..."` or a `schedule`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from supervisor.config._schema import Table, did_you_mean
from supervisor.spec import AgentSpec, LoopSpec

RACE_KEYS = ("race", "agents", "race_deadline")


def read_race(
    t: Table, agents: Mapping[str, AgentSpec], worktree: bool
) -> tuple[int, tuple[str, ...], float | None]:
    """(attempts, their agents, the deadline); (0, (), None) for a loop that is no race."""
    race = t.integer("race", 0)
    named = t.strings("agents", (), nonempty=True)
    deadline = t.duration("race_deadline", None)
    for index, agent in enumerate(named):
        if agent not in agents:
            t.issues.error(
                (*t.at("agents"), index),
                f'agents[{index}]: unknown agent "{agent}"{did_you_mean(agent, agents)}',
            )
    if "race" in t and race < 2:
        t.error("race", f"a race needs at least 2 attempts, got {race}")
        return 0, (), None
    if named and "race" in t and race != len(named):
        t.error("race", f"race = {race} but agents names {len(named)}: drop race or match it")
    if "agents" in t and len(named) < 2 and "race" not in t:
        t.error("agents", "a race needs at least 2 agents (or race = N with one agent)")
        return 0, (), None
    count = len(named) or race
    if count == 0:
        if "race_deadline" in t:
            t.error("race_deadline", "has no effect without race or agents")
        return 0, (), None
    key = "race" if "race" in t else "agents"
    if not worktree:
        t.error(key, "a race needs a git worktree workspace (workspace = { repo = ... })")
    for other, why in (("after", "after"), ("schedule", "a schedule")):
        if other in t:
            t.error(other, f"a race cannot have {why} (not supported)")
    return count, named, deadline


def attempt_name(race: str, n: int) -> str:
    return f"{race}.{n}"


def expand_races(loops: list[tuple[Table, LoopSpec]]) -> list[tuple[Table, LoopSpec]]:
    """Each race loop followed by its attempts; a name an attempt would take is an error."""
    names = {spec.name for _, spec in loops}
    out: list[tuple[Table, LoopSpec]] = []
    for t, spec in loops:
        out.append((t, spec))
        if spec.race < 2 or spec.worktree is None:
            continue
        if spec.worktree.after_loop is not None:
            ws = t.table("workspace")
            where = ws.at("base") if ws is not None else t.at("workspace")
            t.issues.error(
                where, 'workspace.base: a race cannot start from "loop:..." (not supported)'
            )
        branch = spec.worktree.branch
        if "{loop}" not in branch:
            branch = "loopvisor/{loop}"
        for n in range(1, spec.race + 1):
            name = attempt_name(spec.name, n)
            if name in names:
                t.error(
                    "name", f'its attempt {n} would be a loop "{name}", which exists: rename one'
                )
            out.append((t, attempt_spec(spec, n, branch)))
    return out


def attempt_spec(race: LoopSpec, n: int, branch: str) -> LoopSpec:
    """Attempt `n` of `race`: its loop with its own name, agent, worktree and branch."""
    assert race.worktree is not None
    name = attempt_name(race.name, n)
    return dataclasses.replace(
        race,
        name=name,
        agent=race.agents[n - 1] if race.agents else race.agent,
        workspace=race.workspace.parent / name,
        worktree=dataclasses.replace(race.worktree, branch=branch),
        on_success="keep",
        push_remote=None,
        race=0,
        agents=(),
        race_deadline=None,
        attempt_of=race.name,
        budget=dataclasses.replace(race.budget, limits=type(race.budget.limits)()),
    )
