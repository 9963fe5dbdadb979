"""`loopvisor run -p "make the tests pass" --agent claude-code --check "pytest -q"`: one
loop without a loops.toml.

Every flag is a key of loops.toml: the flags are written as TOML text and that text
goes through `parse_config`, the same validation as a file, so a mistake reads the
same (the position names the generated line, which `--print-config` shows).
`--print-config` prints that TOML and exits: saved as loops.toml it is the same
run. Paths are the working directory's, as a loops.toml there would have them; the
state dir is ./.loopvisor, so `status`, `history` and `--resume` find the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
from pathlib import Path

from supervisor.config.load import parse_config
from supervisor.spec import Config

CONFIG_NAME = "loops.toml"
"""The file the one-line loop stands for (in the working directory; never written)."""


def add_arguments(run: argparse.ArgumentParser) -> None:
    one = run.add_argument_group("one loop without a loops.toml (every flag is a config key)")
    one.add_argument("-p", "--prompt", help="the loop's prompt: runs one loop, no config file")
    one.add_argument("--agent", default=None, help="agent kind (default: claude-code)")
    one.add_argument(
        "--command",
        dest="agent_command",
        help="the command agent's argv, one shell-quoted string ($prompt is the prompt)",
    )
    one.add_argument("--model", help="the agent's model (claude-code, anthropic)")
    one.add_argument("--check", action="append", default=[], help="a check command (repeatable)")
    one.add_argument("--done-marker", help="text in the agent's reply that means done")
    one.add_argument("--max-iterations", type=int, default=None)
    one.add_argument("--usd", type=float, default=None, help="the loop's USD budget")
    one.add_argument("--tokens", type=int, default=None, help="the loop's token budget")
    one.add_argument("--name", default="loop", help="the loop's name (default: loop)")
    one.add_argument(
        "--worktree", action="store_true", help="work in a git worktree of this repository"
    )
    one.add_argument(
        "--print-config", action="store_true", help="print the equivalent loops.toml and exit"
    )


ONE_LINE_FLAGS = (
    "prompt",
    "agent",
    "agent_command",
    "model",
    "done_marker",
    "max_iterations",
    "usd",
    "tokens",
)


def wanted(args: argparse.Namespace) -> bool:
    """Whether `run` was given a one-line loop (a prompt, or any flag only it has)."""
    given = any(getattr(args, name) is not None for name in ONE_LINE_FLAGS)
    return given or bool(args.check) or args.worktree or args.print_config or args.name != "loop"


def toml_text(args: argparse.Namespace) -> str:
    """The loops.toml the flags stand for."""
    kind = args.agent or "claude-code"
    agent = [f"[agents.{_key(kind)}]", f"kind = {_s(kind)}"]
    if args.model is not None:
        agent.append(f"model = {_s(args.model)}")
    if args.agent_command is not None:
        agent.append(f"command = {_list(shlex.split(args.agent_command))}")
    loop = ["[[loop]]", f"name = {_s(args.name)}", f"agent = {_s(kind)}"]
    if args.prompt is not None:
        loop.append(f"prompt = {_s(args.prompt)}")
    loop.append(
        'workspace = { repo = ".", worktree = true }' if args.worktree else 'workspace = "."'
    )
    if args.max_iterations is not None:
        loop.append(f"max_iterations = {args.max_iterations}")
    if args.check:
        loop.append("checks = [" + ", ".join(f"{{ run = {_s(c)} }}" for c in args.check) + "]")
    if args.done_marker is not None:
        loop.append(f"done_marker = {_s(args.done_marker)}")
    budget = []
    if args.usd is not None:
        budget.append(f"usd = {args.usd!r}")
    if args.tokens is not None:
        budget.append(f"tokens = {args.tokens}")
    if budget:
        loop += ["", "[loop.budget]", *budget]
    header = "# loops.toml of a one-line `loopvisor run -p ...` (--print-config)"
    return "\n".join([header, "", *agent, "", *loop]) + "\n"


def one_line_config(args: argparse.Namespace, cwd: Path, text: str | None = None) -> Config:
    """The flags' TOML validated as loops.toml in `cwd` (ConfigError as for a file)."""
    text = toml_text(args) if text is None else text
    path = cwd / CONFIG_NAME
    config = parse_config(text, path, state_dir=args.state_dir)
    return dataclasses.replace(config, text=text)


def _s(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text, ensure_ascii=False)


def _list(items: list[str]) -> str:
    return "[" + ", ".join(_s(i) for i in items) + "]"


def _key(name: str) -> str:
    """A table key: bare when it can be (`claude-code`), quoted otherwise."""
    bare = name.replace("-", "").replace("_", "").isalnum() and name.isascii()
    return name if bare else _s(name)
