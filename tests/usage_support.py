"""A command agent speaking the usage protocol (`usage = "json-lines"`), for the tests
of the agent and of the CLI: it prints the lines it is given, and can hang with a
grandchild so that a test sees a budget crossing kill its whole group."""

from __future__ import annotations

import json

from helpers import command_agent

USAGE_AGENT = (
    "import json, os, subprocess, sys, time\n"
    "spec = json.loads(sys.argv[1])\n"
    "if spec.get('hang'):\n"
    "    child = subprocess.Popen(['sleep', '30'])\n"
    "    open('pids.txt', 'w').write(f'{os.getpid()} {child.pid}')\n"
    "for line in spec['lines']:\n"
    "    print(line, flush=True)\n"
    "if spec.get('hang'):\n"
    "    time.sleep(30)\n"
)
"""Prints the lines it is given (argv[1]: {"lines": [...], "hang": bool}) and, with
hang, starts a grandchild `sleep 30`, writes both pids to pids.txt and sleeps."""


def usage_line(**fields: object) -> str:
    """One line of the protocol: `{"loopvisor_usage": {fields}}`."""
    return json.dumps({"loopvisor_usage": fields})


def usage_agent(lines: list[str], *, hang: bool = False, **keys: object) -> str:
    """`[agents.metered]`: the agent above printing `lines` (json-lines unless `usage`)."""
    keys.setdefault("usage", "json-lines")
    return command_agent(
        "metered", USAGE_AGENT, json.dumps({"lines": lines, "hang": hang}), "$prompt", **keys
    )
