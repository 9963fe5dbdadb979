"""`loopvisor` command line: run, check, init, and the front-end choice.

`loopvisor [CONFIG]` opens the TUI when stdout is a terminal and falls back to
headless output otherwise. The TUI package is imported only on that path (by
name, at run time), so the core never depends on a UI library.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio

from . import runtime
from .config import STARTER_TOML, ConfigError, load_config, summarize_loop
from .headless import HeadlessPrinter
from .spec import Config
from .worktree import WorktreeError, prepare_worktrees, remove_worktree

COMMANDS = ("run", "check", "init", "clean")
DEFAULT_CONFIG = Path("loops.toml")


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "config",
        nargs="?",
        type=Path,
        default=DEFAULT_CONFIG,
        help="loops.toml (default: ./loops.toml)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="journal and worktrees (default: .loopvisor/ beside the config)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loopvisor",
        description="Supervise many agent loops under one hard budget.",
        epilog="With no command: the TUI on ./loops.toml (headless when stdout is not a terminal).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the loops of a config")
    _config_arg(run)
    run.add_argument(
        "--headless", action="store_true", help="no UI: log lines (or --json) and an exit code"
    )
    run.add_argument("--json", action="store_true", help="headless JSON lines, summary last")
    run.add_argument("--quiet", action="store_true", help="headless: omit agent transcripts")
    run.add_argument("--resume", action="store_true", help="continue the newest unfinished run")

    check = sub.add_parser("check", help="validate a config and summarise each loop")
    check.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG)

    clean = sub.add_parser("clean", help="remove a loop's git worktree (its branch is kept)")
    clean.add_argument("loops", nargs="+", metavar="LOOP")
    clean.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    clean.add_argument("--state-dir", type=Path, default=None)
    clean.add_argument("--delete-branch", action="store_true", help="also delete the branch")

    init = sub.add_parser("init", help="write a commented starter loops.toml")
    init.add_argument("path", nargs="?", type=Path, default=DEFAULT_CONFIG)
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0] not in COMMANDS and args_list[0] not in ("-h", "--help")):
        # `loopvisor [CONFIG] [options]`: the TUI on a terminal, headless otherwise.
        args_list = ["run", *args_list]
        if not sys.stdout.isatty():
            args_list.append("--headless")
    parser = build_parser()
    args = parser.parse_args(args_list)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": cmd_run,
        "check": cmd_check,
        "init": cmd_init,
        "clean": cmd_clean,
    }
    try:
        return handlers[args.command](args)
    except (ConfigError, WorktreeError) as exc:
        print(str(exc), file=sys.stderr)
        return runtime.EXIT_USAGE


def load(path: Path, state_dir: Path | None = None) -> Config:
    config = load_config(path, state_dir=state_dir)
    for warning in config.warnings:
        print(warning, file=sys.stderr)
    return config


def cmd_check(args: argparse.Namespace) -> int:
    config = load(args.config)
    for loop in config.loops:
        print(summarize_loop(config, loop))
    print(f"{args.config}: ok, {len(config.loops)} loop(s), {len(config.agents)} agent(s)")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    path: Path = args.path
    if path.exists() and not args.force:
        print(f"{path} exists; use --force to overwrite", file=sys.stderr)
        return runtime.EXIT_USAGE
    path.write_text(STARTER_TOML, encoding="utf-8")
    print(f"wrote {path}; check it: `loopvisor check {path}`; run it: `loopvisor run {path}`")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    config = load(args.config, args.state_dir)
    for name in args.loops:
        try:
            loop = config.loop(name)
        except KeyError:
            print(f"no loop named {name!r} in {args.config}", file=sys.stderr)
            return runtime.EXIT_USAGE
        print(remove_worktree(loop, delete_branch=args.delete_branch))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = load(args.config, args.state_dir)
    for line in prepare_worktrees(config):
        print(line, file=sys.stderr)
    headless = args.headless or args.json or not sys.stdout.isatty()
    if not headless:
        app_module = importlib.import_module("tui.app")
        code: int = app_module.run_tui(config, resume=args.resume)
        return code
    return anyio.run(_run_headless, config, args)


async def _run_headless(config: Config, args: argparse.Namespace) -> int:
    supervisor = runtime.Supervisor(config, exit_when_idle=True)
    printer = HeadlessPrinter(json_lines=args.json, transcripts=not args.quiet)
    return await run_with_printer(supervisor, printer)


async def run_with_printer(supervisor: runtime.Supervisor, printer: HeadlessPrinter) -> int:
    """Run to the end with the printer subscribed; SIGINT/SIGTERM stop cleanly (130)."""
    results: list[int] = []
    async with (
        supervisor.subscribe(max_buffer=100_000) as events,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(printer.consume, events)
        async with anyio.create_task_group() as run_tg:
            run_tg.start_soon(_cancel_on_signal, run_tg.cancel_scope)
            summary = await supervisor.run()
            results.append(summary.exit_code)
            run_tg.cancel_scope.cancel()
        supervisor.bus.close()
    await supervisor.aclose()
    return results[0] if results else runtime.EXIT_INTERRUPTED


async def _cancel_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return
