"""`[agents.NAME]` tables to agent specs: the kind's own reader, from the registry.

The valid keys of a kind are the fields of its spec dataclass (minus name and kind)
and its `extra_keys`, so the error for a misspelt key always lists what the spec
really accepts. A kind's reader sees the table through `TableReader`
(`supervisor.agents.kind`), which `_AgentTable` implements on top of `Table`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from supervisor.agents.registry import KINDS
from supervisor.config._placeholders import placeholder_names, template_problems
from supervisor.config._schema import (
    Issues,
    Table,
    describe,
    did_you_mean,
    entries,
    name_problem,
    read_child_env,
    read_file,
)
from supervisor.config._tomlpos import KeyPath
from supervisor.spec import AgentSpec


class _AgentTable(Table):
    """A `Table` with what a kind's reader needs besides typed values (`TableReader`)."""

    def __init__(self, issues: Issues, raw: Mapping[str, object], at: KeyPath, config_dir: Path):
        super().__init__(issues, entries(raw, at), at)
        self.config_dir = config_dir

    def _item(self, key: str, index: int) -> KeyPath:
        return (*self.at(key), index)

    def item_error(self, key: str, index: int, message: str) -> None:
        self.issues.error(self._item(key, index), f"{self.label}{key}[{index}]: {message}")

    def warn(self, key: str, message: str) -> None:
        self.issues.warn(self.at(key), message)

    def choices(
        self, key: str, allowed: Collection[str], default: tuple[str, ...], *, noun: str
    ) -> tuple[str, ...]:
        values = self.strings(key, default)
        for index, value in enumerate(values):
            if value not in allowed:
                hint = did_you_mean(value, allowed) or (" (available: " + ", ".join(allowed) + ")")
                self.issues.error(
                    self._item(key, index), f'{self.label}{key}: unknown {noun} "{value}"{hint}'
                )
        return values

    def placeholders(
        self, key: str, values: Sequence[str], allowed: frozenset[str]
    ) -> list[set[str]]:
        for index, value in enumerate(values):
            for _, message in template_problems(value, allowed):
                self.item_error(key, index, message)
        return [placeholder_names(value) for value in values]

    def child_env(self) -> tuple[Mapping[str, str], tuple[str, ...]]:
        return read_child_env(self)

    def file_text(self, key: str) -> str | None:
        found = read_file(self, key, self.config_dir)
        return found[1] if found else None


def read_agents(issues: Issues, raw: object, config_dir: Path) -> dict[str, AgentSpec]:
    """Every agent that reads cleanly; problems go to `issues`."""
    agents: dict[str, AgentSpec] = {}
    if raw is None:
        return agents
    if not isinstance(raw, dict):
        issues.error(("agents",), f"agents: expected a table of agents, got {describe(raw)}")
        return agents
    for name, value in raw.items():
        at = ("agents", name)
        problem = name_problem(name)
        if problem is not None:
            issues.error(at, f'agent name "{name}" {problem}')
            continue
        if not isinstance(value, dict):
            issues.error(
                at, f'agents.{name}: expected a table with kind = "...", got {describe(value)}'
            )
            continue
        table = _AgentTable(issues, value, at, config_dir)
        what = f'agent "{name}"'
        kinds = tuple(KINDS)
        if not table.require("kind", f"{what} (kind is one of {', '.join(kinds)})"):
            continue
        kind_name = table.choice("kind", kinds, None)
        if kind_name is None:
            continue
        kind = KINDS[kind_name]
        table.check_keys(kind.keys(), f"{what} (kind {kind_name})")
        agents[name] = kind.read(table, name)
    return agents
