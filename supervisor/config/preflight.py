"""What `loopvisor check` warns about beyond a valid file: an agent whose program is
not installed, a model with no known price. Each warning says how to fix it; none is
an error (the exit code stays 0): the program may be installed on the machine that
runs the loops, and an unpriced model still counts tokens.

Not part of `load_config`: PATH is the environment's, not the file's, and `run`
finds a missing program when it starts it (an agent failure naming it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from supervisor.agents.pricing import price_for
from supervisor.agents.registry import kind_of
from supervisor.spec import AgentSpec, Config


def preflight_warnings(config: Config, environ: Mapping[str, str] = os.environ) -> list[str]:
    """One warning per problem, `FILE: warning: ...`, in the order of the agents (a
    price's is followed by the indented `[pricing]` table to add)."""
    out: list[str] = []
    usd_limited = config.supervisor.budget.usd is not None or any(
        loop.budget.limits.usd is not None for loop in config.loops
    )
    for name, agent in config.agents.items():
        missing = _missing_binary(config, name, agent, environ)
        if missing:
            out.append(f"{config.path}: warning: {missing}")
        if not usd_limited:  # under a USD limit `load_config` has warned already
            unpriced = _unpriced(config, name, agent)
            if unpriced:
                out.append(f"{config.path}: warning: {unpriced}")
    return out


def _missing_binary(
    config: Config, name: str, agent: AgentSpec, environ: Mapping[str, str]
) -> str | None:
    kind = kind_of(agent)
    program = kind.binary(agent) if kind.binary is not None else None
    if not program or "$" in program:  # a placeholder: known only per turn
        return None
    env = getattr(agent, "env", {}) or {}
    path = env.get("PATH", environ.get("PATH", os.defpath))
    if "/" in program:
        folders = [loop.workspace for loop in config.loops if loop.agent == name] or [Path()]
        if any(os.access(Path(folder) / program, os.X_OK) for folder in folders):
            return None
        where = "is not an executable file"
    elif shutil.which(program, path=path) is not None:
        return None
    else:
        where = "is not on PATH"
    fix = f"install it ({kind.install_hint})" if kind.install_hint else "install it"
    return (
        f'agent "{name}" ({kind.name}): program "{program}" {where}: {fix}, or set '
        "command to its full path (loops using it fail until then)"
    )


def _unpriced(config: Config, name: str, agent: AgentSpec) -> str | None:
    kind = kind_of(agent)
    model = kind.priced_model(agent) if kind.priced_model is not None else None
    if model is None or price_for(model, config.pricing) is not None:
        return None
    return (
        f'model "{model}" of agent "{name}" has no known price: its USD spend shows as $0 '
        "and a USD limit cannot stop it; add its price to loops.toml:\n"
        f'    [pricing."{model}"]\n'
        "    input = 0.0    # USD per million input tokens\n"
        "    output = 0.0   # USD per million output tokens"
    )
