"""Reloading loops.toml into a running supervisor (SIGHUP, `ctl reload`).

A reload applies what changed *in the file* since it was last loaded, not the whole
file: an operator's edit (TUI `e`, `ctl edit`) stays until the file changes that
key, and the report says which edits were kept. What can change mid-run is a loop's
prompt, max_iterations and budget limits, from its next iteration, through
`Supervisor.edit` (so each change is a journalled control event). Everything else
(new or removed loops, agents, checks, workspaces, global settings, `[notify]`:
the notifier is built when the run starts) is reported as
"needs a restart of serve" and not applied: a half-applied run would be harder to
reason about than a restart. The file is compared with the loops that came from it
(`Supervisor.file_loops`): the loops the run forked or added (`newloops`) were never
in it, so they are neither reported as removed nor changed by a file loop of their
name. An invalid file is rejected with its error and the old
config kept.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.config.load import ConfigError, load_config
from supervisor.control.protocol import RemoteError
from supervisor.runtime import Supervisor
from supervisor.spec import Limits, LoopSpec


@dataclass(frozen=True, slots=True)
class ReloadReport:
    applied: tuple[str, ...]
    needs_restart: tuple[str, ...]
    kept: tuple[str, ...] = ()
    """Operator edits left in place because the file did not change their key."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": list(self.applied),
            "needs_restart": list(self.needs_restart),
            "kept": list(self.kept),
        }


_NOT_COMPARED = frozenset({"prompt", "max_iterations", "budget", "extends", "prompt_file"})
"""Applied live (the first three) or only a means to a compared value (the last two)."""
_LIMITS = ("tokens", "usd", "wall", "cpu")


async def reload_config(sup: Supervisor, path: Path, state_dir: Path | None = None) -> ReloadReport:
    """Re-read `path` and apply what changed in it (see the module docstring).

    Every outcome is published as a `Notice` (serve's log prints them). Invalid: an
    error notice, then RemoteError(kind="config"); nothing changes.
    """
    try:
        new = load_config(path, state_dir=state_dir)
    except ConfigError as exc:
        sup.notice(f"reload rejected, old config kept: {exc}", level="error")
        raise RemoteError(str(exc), "config") from None
    for warning in new.warnings:
        sup.notice(f"reload: {warning}", level="warning")
    applied: list[tuple[str | None, str]] = []
    restart: list[tuple[str | None, str]] = []
    kept: list[tuple[str | None, str]] = []
    for spec in new.loops:
        runner = sup.runners.get(spec.name)
        if runner is None:
            restart.append((None, f"{spec.name}: new loop; starts after a restart of serve"))
            continue
        if spec.name not in sup.file_loops:  # the run forked or added it: not the file's
            restart.append(
                (
                    spec.name,
                    f"{spec.name}: new loop; a loop this run forked or added has its name:"
                    " that one is left as it is; the file's starts after a restart of serve"
                    " (which does not restore the other)",
                )
            )
            continue
        before = sup.file_loops.get(spec.name, runner.spec)
        edits, what, still_edited = _live_changes(before, spec, runner.spec)
        others = _restart_fields(runner.spec, spec)
        old_agent = sup.config.agents.get(spec.agent)
        if spec.agent == runner.spec.agent and old_agent != new.agents[spec.agent]:
            others.append(f"agent {spec.agent!r} settings")
        if edits:
            await sup.edit(spec.name, **edits)
            applied.append((spec.name, f"{spec.name}: {'; '.join(what)} (from its next iteration)"))
        if still_edited:
            kept.append(
                (
                    spec.name,
                    f"{spec.name}: operator edit kept ({'; '.join(still_edited)}):"
                    f" {path.name} did not change it",
                )
            )
        if others:
            restart.append(
                (spec.name, f"{spec.name}: {', '.join(others)} changed; needs a restart of serve")
            )
        sup.file_loops[spec.name] = spec
    for name in sorted(set(sup.file_loops) - {s.name for s in new.loops}):
        restart.append(
            (
                name,
                f"{name}: no longer in {path.name}; keeps running until a restart of serve"
                f" (`loopvisor ctl stop {name}` stops it now)",
            )
        )
    old_sup, new_sup = sup.config.supervisor, new.supervisor
    for key in (
        "state_dir",
        "max_concurrent",
        "budget",
        "rate_limits",
        "max_output_per_iteration",
        "disk_full_grace",
    ):
        if getattr(old_sup, key) != getattr(new_sup, key):
            restart.append((None, f"[supervisor] {key} changed; needs a restart of serve"))
    if dict(sup.config.pricing) != dict(new.pricing):
        restart.append((None, "[pricing] changed; needs a restart of serve"))
    if sup.config.notify != new.notify:  # named only: a webhook URL is a secret
        restart.append((None, "[notify] changed; needs a restart of serve"))
    for loop, line in applied + kept:
        sup.notice(f"reload: {line}", loop=loop)
    for loop, line in restart:
        sup.notice(f"reload: {line}", level="warning", loop=loop)
    sup.notice(f"reloaded {path}: {len(applied)} change(s) applied, {len(restart)} need a restart")
    return ReloadReport(
        tuple(x for _, x in applied), tuple(x for _, x in restart), tuple(x for _, x in kept)
    )


def _live_changes(
    before: LoopSpec, after: LoopSpec, current: LoopSpec
) -> tuple[dict[str, Any], list[str], list[str]]:
    """(edit kwargs, what they change, operator edits kept) for the keys that apply
    live: a key changes when the file changed it (`before` → `after`); `current` is
    what the loop runs with now, operator edits included."""
    edits: dict[str, Any] = {}
    what: list[str] = []
    kept: list[str] = []
    if after.prompt != before.prompt:
        edits["prompt"] = after.prompt
        what.append("prompt changed")
    elif current.prompt != before.prompt:
        kept.append("prompt")
    if after.max_iterations != before.max_iterations:
        edits["max_iterations"] = after.max_iterations
        what.append(f"max_iterations {current.max_iterations} → {after.max_iterations}")
    elif current.max_iterations != before.max_iterations:
        kept.append(f"max_iterations {current.max_iterations}")
    limits = dict(_limit_values(current.budget.limits))
    changed: list[str] = []
    for key, value in _limit_values(after.budget.limits):
        old = getattr(before.budget.limits, key)
        if value != old:
            changed.append(f"{key} {limits[key]} → {value}")
            limits[key] = value
        elif limits[key] != old:
            kept.append(f"budget {key} {limits[key]}")
    if changed:
        edits["limits"] = dataclasses.replace(current.budget.limits, **limits)
        what.append("budget " + ", ".join(changed))
    return edits, what, kept


def _limit_values(limits: Limits) -> list[tuple[str, Any]]:
    return [(key, getattr(limits, key)) for key in _LIMITS]


def _restart_fields(current: LoopSpec, after: LoopSpec) -> list[str]:
    """Fields that changed and cannot apply mid-run (the operator cannot edit them, so
    `current` holds what the loop started with)."""
    others = [
        f.name
        for f in dataclasses.fields(LoopSpec)
        if f.name not in _NOT_COMPARED and getattr(current, f.name) != getattr(after, f.name)
    ]
    if after.budget.retries != current.budget.retries:
        others.append("budget.retries")
    return others
