"""`[agents.NAME]` tables to AgentSpec: one reader per kind, keys from the dataclasses.

The valid keys of a kind are the fields of its spec dataclass (minus name and kind),
so the error for a misspelt key always lists what the spec really accepts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import get_args

from supervisor.agents.tools import TOOL_NAMES
from supervisor.config._placeholders import (
    COMMAND_PLACEHOLDERS,
    placeholder_names,
    template_problems,
)
from supervisor.config._schema import (
    Issues,
    Table,
    describe,
    did_you_mean,
    name_problem,
    read_child_env,
    read_file,
)
from supervisor.spec import (
    AgentSpec,
    AnthropicAgentSpec,
    ClaudeCodeAgentSpec,
    CommandAgentSpec,
    SimAgentSpec,
    SimBehavior,
)

ANTHROPIC_TOOLS = TOOL_NAMES
"""The built-in workspace tools an anthropic agent may be given."""

SPEC_CLASSES: dict[str, type] = {
    "sim": SimAgentSpec,
    "command": CommandAgentSpec,
    "anthropic": AnthropicAgentSpec,
    "claude-code": ClaudeCodeAgentSpec,
}
EXTRA_KEYS: dict[str, frozenset[str]] = {"anthropic": frozenset({"system_file"})}


def agent_keys(kind: str) -> frozenset[str]:
    """The keys `[agents.X]` accepts for `kind`."""
    fields = {f.name for f in dataclasses.fields(SPEC_CLASSES[kind])} - {"name"}
    return frozenset(fields) | EXTRA_KEYS.get(kind, frozenset())


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
        table = Table.of(issues, value, at)
        what = f'agent "{name}"'
        kinds = tuple(SPEC_CLASSES)
        if not table.require("kind", f"{what} (kind is one of {', '.join(kinds)})"):
            continue
        kind = table.choice("kind", kinds, None)
        if kind is None:
            continue
        table.check_keys(agent_keys(kind), f"{what} (kind {kind})")
        agents[name] = _READERS[kind](table, name, config_dir)
    return agents


def _sim(t: Table, name: str, config_dir: Path) -> AgentSpec:
    d = SimAgentSpec(name=name)
    behaviors: tuple[SimBehavior, ...] = get_args(SimBehavior)
    return SimAgentSpec(
        name=name,
        seed=t.integer("seed", d.seed),
        rate=t.number("rate", d.rate, minimum=0),
        behavior=t.choice("behavior", behaviors, d.behavior),  # type: ignore[arg-type]
        converge_after=t.integer("converge_after", d.converge_after, minimum=1),
        reply_tokens=t.integer("reply_tokens", d.reply_tokens, minimum=1),
        input_tokens=t.integer("input_tokens", d.input_tokens, minimum=0),
        files=t.string_map("files"),
        draft_files=t.string_map("draft_files"),
        alt_files=t.string_map("alt_files"),
        done_text=t.string("done_text", d.done_text),
        stall_after=t.integer("stall_after", d.stall_after, minimum=1),
        usd_per_mtok=t.number("usd_per_mtok", d.usd_per_mtok, minimum=0),
    )


def _command(t: Table, name: str, config_dir: Path) -> AgentSpec:
    stdin = t.boolean("stdin", False)
    command: tuple[str, ...] = ()
    if t.require("command", f'agent "{name}"'):
        command = t.strings("command", (), nonempty=True)
    for index, arg in enumerate(command):
        at = (*t.at("command"), index)
        for _, message in template_problems(arg, COMMAND_PLACEHOLDERS):
            t.issues.error(at, f"command[{index}]: {message}")
        if stdin and "prompt" in placeholder_names(arg):
            t.issues.error(
                at,
                f"command[{index}]: $prompt cannot be used with stdin = true "
                "(the prompt is sent on stdin); use $prompt_file or drop stdin",
            )
    names = set().union(*(placeholder_names(arg) for arg in command))
    if command and not stdin and not names & {"prompt", "prompt_file"}:
        t.issues.warn(
            t.at("command"),
            f'agent "{name}" never receives the prompt: add $prompt or $prompt_file to '
            "command, or set stdin = true",
        )
    env, pass_env = read_child_env(t)
    return CommandAgentSpec(
        name=name,
        command=command,
        stdin=stdin,
        timeout=t.duration("timeout", None, off=True),
        env=env,
        pass_env=pass_env,
    )


def _anthropic(t: Table, name: str, config_dir: Path) -> AgentSpec:
    d = AnthropicAgentSpec(name=name, model="")
    model = ""
    if t.require("model", f'agent "{name}"'):
        model = t.string("model", "", nonempty=True)
    tools = t.strings("tools", d.tools)
    for index, tool in enumerate(tools):
        if tool not in ANTHROPIC_TOOLS:
            hint = did_you_mean(tool, ANTHROPIC_TOOLS) or (
                " (available: " + ", ".join(ANTHROPIC_TOOLS) + ")"
            )
            t.issues.error((*t.at("tools"), index), f'tools: unknown tool "{tool}"{hint}')
    system = t.string("system", d.system)
    if "system_file" in t:
        if "system" in t:
            t.error("system_file", "use either system or system_file, not both")
        found = read_file(t, "system_file", config_dir)
        system = found[1] if found else system
    env, pass_env = read_child_env(t)
    return AnthropicAgentSpec(
        name=name,
        model=model,
        max_tokens=t.integer("max_tokens", d.max_tokens, positive=True),
        temperature=t.number("temperature", d.temperature, minimum=0, maximum=1),
        system=system,
        base_url=t.string("base_url", d.base_url, nonempty=True),
        tools=tools,
        max_turns=t.integer("max_turns", d.max_turns, positive=True),
        timeout=t.duration("timeout", d.timeout, off=True),
        stall=t.duration("stall", d.stall, off=True),
        tool_timeout=t.duration("tool_timeout", d.tool_timeout),
        env=env,
        pass_env=pass_env,
    )


def _claude_code(t: Table, name: str, config_dir: Path) -> AgentSpec:
    d = ClaudeCodeAgentSpec(name=name)
    env, pass_env = read_child_env(t)
    return ClaudeCodeAgentSpec(
        name=name,
        command=t.string("command", d.command, nonempty=True),
        args=t.strings("args", d.args),
        model=t.string("model", d.model, nonempty=True),
        timeout=t.duration("timeout", d.timeout, off=True),
        stall=t.duration("stall", d.stall, off=True),
        partial_messages=t.boolean("partial_messages", d.partial_messages),
        env=env,
        pass_env=pass_env,
        reserve_tokens=t.integer("reserve_tokens", d.reserve_tokens, minimum=0),
    )


_READERS: Mapping[str, Callable[[Table, str, Path], AgentSpec]] = {
    "sim": _sim,
    "command": _command,
    "anthropic": _anthropic,
    "claude-code": _claude_code,
}
