"""The sub-commands implemented in modules of their own (`land`; `serve`, `attach` and
`ctl` in `remote`; `diff`; `fork`; `notify`): their arguments, and handlers that import
the module only when the command runs.

Why here and not beside each command: `run` parses its argv with the same parser as
every command, and those modules import the control client, git, landing and
notification code; at every start of `run` that was ~8 ms of CPU for their argument
parsers. And only the parser of the command the argv names is built (`add`, and
`main.build_parser` for its own): argparse makes a help formatter per argument and
gettext looks for translations at every `ArgumentParser`, ~10 ms for the 24 parsers of
the whole command line. With no command (`loopvisor --help`) all are built, so the help
lists them all as before; a named command's help, usage and errors never list the
others (`tests/e2e/test_cli_parsers.py`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from supervisor.land import DEFAULT_REMOTE
from supervisor.textsafe import valid_text

Handler = Callable[[argparse.Namespace], int]
DEFAULT_CONFIG = Path("loops.toml")


def add(sub: Any, names: Iterable[str], command: str | None) -> None:
    """Add those of `names` that `command` names (all of them when None: the help of all)
    to the main parser's sub-parsers."""
    for name in names:
        if command is None or command == name:
            help_text, add_arguments = _COMMANDS[name]
            add_arguments(sub.add_parser(name, help=help_text))


def valid_args(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with every text argument valid: argv bytes that are not UTF-8 arrive as
    lone surrogates (surrogateescape) and would raise far away, when a loop name or an
    injected note is sent, journalled or printed. They become U+FFFD here. Paths
    (`Path` values) are left alone: a file name may be any bytes."""
    for name, value in vars(args).items():
        if isinstance(value, str):
            setattr(args, name, valid_text(value))
    return args


# -- handlers: the command's module imported when it runs ------------------------------
def cmd_land(args: argparse.Namespace) -> int:
    from supervisor.cli import land

    return land.cmd_land(args)


def cmd_diff(args: argparse.Namespace) -> int:
    from supervisor.cli import diff

    return diff.cmd_diff(args)


def cmd_fork(args: argparse.Namespace) -> int:
    from supervisor.cli import fork

    return fork.cmd_fork(args)


def cmd_notify(args: argparse.Namespace) -> int:
    from supervisor.cli import notify

    return notify.cmd_notify(args)


def cmd_mcp(args: argparse.Namespace) -> int:
    from supervisor.cli import mcp

    return mcp.cmd_mcp(args)


def cmd_temporal(args: argparse.Namespace) -> int:
    from supervisor.cli import temporal

    return temporal.cmd_temporal(args)


def cmd_remote(args: argparse.Namespace) -> int:
    from supervisor.cli import remote

    return remote.HANDLERS[args.command](args)


HANDLERS: dict[str, Handler] = {
    "land": cmd_land,
    "diff": cmd_diff,
    "fork": cmd_fork,
    "notify": cmd_notify,
    "mcp": cmd_mcp,
    "temporal": cmd_temporal,
    "serve": cmd_remote,
    "attach": cmd_remote,
    "ctl": cmd_remote,
}


# -- arguments -------------------------------------------------------------------------
def _land(p: argparse.ArgumentParser) -> None:
    p.add_argument("loop", metavar="LOOP")
    p.add_argument("--squash", action="store_true", help="one commit of all its changes")
    p.add_argument(
        "--into", metavar="BRANCH", help="the target (default: the branch it was made from)"
    )
    p.add_argument(
        "--push",
        nargs="?",
        const=DEFAULT_REMOTE,
        default=None,
        metavar="REMOTE",
        help=f"push the branch to REMOTE (default {DEFAULT_REMOTE}) instead of merging it here",
    )
    p.add_argument(
        "--pr", action="store_true", help="push it and open a pull request with the GitHub CLI gh"
    )
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--state-dir", type=Path, default=None)


def _diff(p: argparse.ArgumentParser) -> None:
    p.add_argument("loop", metavar="LOOP")
    p.add_argument(
        "--iteration", type=int, help="that iteration's checkpoint commit against its parent"
    )
    p.add_argument("--run", dest="run_id", help="a run id (with --iteration; default: newest)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--state-dir", type=Path, default=None)


def _fork(p: argparse.ArgumentParser) -> None:
    p.add_argument("loop", metavar="LOOP")
    p.add_argument(
        "--iteration", type=int, required=True, metavar="N", help="the iteration to start from"
    )
    p.add_argument("--name", default=None, help="the new loop's name (default: LOOP-forkN)")
    p.add_argument(
        "--prompt-file",
        type=Path,
        default=None,
        metavar="F",
        help="its prompt template (default: the parent's)",
    )
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--state-dir", type=Path, default=None)


def _notify(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG)
    p.add_argument(
        "--test", action="store_true", required=True, help="send the test message (required)"
    )


def _serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--state-dir", type=Path, default=None, help="default: from the config")
    p.add_argument(
        "--detach", action="store_true", help="run in the background; return once it answers"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the newest unfinished run (after a crash)"
    )


def _target(p: argparse.ArgumentParser) -> None:
    """Where the served supervisor is (`attach` and every `ctl` action)."""
    p.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="find the state dir from this config"
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--state-dir", type=Path, default=None, help="the served state dir")
    where.add_argument("--socket", type=Path, default=None, help="the control socket itself")


def _ctl(ctl: argparse.ArgumentParser) -> None:
    actions = ctl.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=help_text)
        _target(parser)
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        return parser

    action("status", "the table of loops (or --json: the whole snapshot)")
    for name, text in (("pause", "pause"), ("resume", "resume")):
        action(name, f"{text} LOOP (default: every loop)").add_argument("loop", nargs="?")
    stop = action("stop", "stop LOOP now (or --all)")
    stop.add_argument("loop", nargs="?")
    stop.add_argument("--all", action="store_true", help="stop every loop")
    action("restart", "start LOOP again from iteration 1").add_argument("loop")
    inject = action("inject", "add TEXT to LOOP's next prompt ('-': read stdin)")
    inject.add_argument("loop")
    inject.add_argument("text")
    edit = action("edit", "change LOOP's prompt or limits from its next iteration")
    edit.add_argument("loop")
    edit.add_argument("--prompt", default=None, help="the new prompt template")
    edit.add_argument("--prompt-file", type=Path, default=None, help="read the prompt from F")
    edit.add_argument("--max-iterations", type=int, default=None)
    edit.add_argument("--tokens", default=None, help="loop token limit (or 'none')")
    edit.add_argument("--usd", default=None, help="loop USD limit (or 'none')")
    edit.add_argument("--wall", default=None, help="loop wall-time limit, e.g. 30m (or 'none')")
    edit.add_argument("--cpu", default=None, help="loop CPU-time limit (or 'none')")
    add = action("add", "start a new loop NAME like LOOP (its agent, checks, workspace kind)")
    add.add_argument("name")
    add.add_argument("--like", required=True, metavar="LOOP", help="the loop it is made like")
    add.add_argument("--prompt", default=None, help="its prompt template (default: LOOP's)")
    add.add_argument("--prompt-file", type=Path, default=None, help="read the prompt from F")
    add.add_argument("--max-iterations", type=int, default=None, help="default: LOOP's")
    for key, what in (("tokens", "token"), ("usd", "USD"), ("wall", "wall-time"), ("cpu", "CPU")):
        add.add_argument(f"--{key}", default=None, help=f"its {what} limit (default: LOOP's)")
    budget = action("budget", "change the run's global limits (loops it paused go on)")
    budget.add_argument("--tokens", default=None, help="global token limit (or 'none')")
    budget.add_argument("--usd", default=None, help="global USD limit (or 'none')")
    budget.add_argument("--wall", default=None, help="global wall-time limit (or 'none')")
    budget.add_argument("--cpu", default=None, help="global CPU-time limit (or 'none')")
    action("reload", "re-read loops.toml (what changed is applied or reported)")
    shutdown = action("shutdown", "stop every loop and the server; print the summary")
    shutdown.add_argument("--timeout", type=float, default=30.0)
    tail = action("tail", "print LOOP's transcript tail, then follow it (Ctrl-C ends)")
    tail.add_argument("loop")
    tail.add_argument("--lines", type=int, default=50, help="lines of history (default 50)")


def _temporal(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="temporal_action", metavar="ACTION", required=True)
    dev = actions.add_parser(
        "dev", help="a Temporal dev server for one box (state under the state dir)"
    )
    dev.add_argument("--ip", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dev.add_argument("--port", type=int, default=7233, help="its gRPC port (default 7233)")
    dev.add_argument("--namespace", default="default", help="created at start (default: default)")
    dev.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="find the state dir here")
    dev.add_argument("--state-dir", type=Path, default=None, help="default: from the config")


_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "land": (
        "merge a loop's branch into the branch it was made from (or push it, or open a PR)",
        _land,
    ),
    "serve": ("run the loops with no UI, a journal and a control socket", _serve),
    "attach": ("open the TUI on a served supervisor (q detaches)", _target),
    "ctl": ("control a served supervisor from scripts", _ctl),
    "diff": ("a worktree loop's changes as a patch (plain when piped: | git apply)", _diff),
    "fork": (
        "start a new loop from a loop's iteration N (its commit and conversation)",
        _fork,
    ),
    "notify": ("send a test notification through each channel of [notify]", _notify),
    "mcp": (
        "an MCP server over stdio that supervises a served loopvisor (loopvisor[mcp])",
        _target,
    ),
    "temporal": ("run loops on Temporal: `temporal dev` starts a dev server", _temporal),
}
"""command -> (its line in `--help`, what adds its arguments)."""
