"""The environment of every process loopvisor starts: an allow-list, never `os.environ`.

Agents, checks and `run` tools execute code a model wrote. Whatever is in their
environment can be printed, land in `$check_output`, be journalled and be sent to
the next request, so they get only:

1. `INHERITED` variables (and `LC_*`) from the supervisor's environment: what a
   shell, a compiler or a test runner needs to behave as in the operator's terminal;
2. the variables an agent kind needs to work (its `AgentKind.child_env`: claude-code
   gets `ANTHROPIC_*` and `CLAUDE_*`, i.e. its API key and settings, and the proxies);
3. the names listed in the agent's or check's `pass_env` (copied when set);
4. its `env = {NAME = "value"}` table from loops.toml;
5. the `LOOPVISOR_*` variables the supervisor sets (loop, iteration, workspace,
   state dir), which win over everything: `durable` finds orphans by them.

One builder for all of them (`child_env`), applied by `process.GroupProcess`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

INHERITED = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TERM",
        "TMPDIR",
        "TZ",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "XDG_STATE_HOME",
        "XDG_RUNTIME_DIR",
        "NO_COLOR",
        # Where the CA certificates are (file paths): HTTPS behind a corporate CA.
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
    }
)
"""Inherited by every agent, check and tool from the supervisor's environment."""
INHERITED_PREFIXES = ("LC_",)
"""Locale settings: inherited too."""
SUPERVISOR_PREFIX = "LOOPVISOR_"
"""Set by the supervisor for each child; a config may not set or pass them."""
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A variable name a shell can read (what `env` and `pass_env` accept)."""


def base_env(source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allow-listed variables of `source` (default: the supervisor's environment)."""
    source = os.environ if source is None else source
    return {
        name: value
        for name, value in source.items()
        if name in INHERITED or name.startswith(INHERITED_PREFIXES)
    }


def passed(names: Iterable[str], source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of `source` named in `names` (`NAME` or `PREFIX*`); unset ones are
    skipped (a check may pass an optional variable)."""
    source = os.environ if source is None else source
    exact = {n for n in names if not n.endswith("*")}
    prefixes = tuple(n[:-1] for n in names if n.endswith("*"))
    if not prefixes:  # names only: looked up, not a walk of the whole environment
        return {name: source[name] for name in sorted(exact) if name in source}
    return {
        name: value for name, value in source.items() if name in exact or name.startswith(prefixes)
    }


def child_env(
    extra: Mapping[str, str] | None = None, source: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The whole environment of a child: the allow-list, then `extra` on top."""
    return {**base_env(source), **(extra or {})}


def configured_env(
    *,
    pass_env: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    supervisor: Mapping[str, str] | None = None,
    kind_env: Iterable[str] = (),
) -> dict[str, str]:
    """What one agent or check adds to the allow-list, in rising precedence: its kind's
    variables (`kind_env`: `NAME` or `PREFIX*`), its `pass_env`, its `env` table, the
    supervisor's `LOOPVISOR_*`."""
    return {
        **passed(kind_env),
        **passed(pass_env),
        **(env or {}),
        **(supervisor or {}),
    }
