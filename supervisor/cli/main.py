"""`loopvisor` command line: run, check, init, and the front-end choice.

`loopvisor [CONFIG]` opens the TUI when stdout is a terminal and falls back to
headless output otherwise. The TUI package is imported only on that path (by
name, at run time), so the core never depends on a UI library.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from supervisor import runtime
from supervisor.cli import oneline, subcommands
from supervisor.cli.findloop import find_loop
from supervisor.config.load import ConfigError, load_config, starter_toml, summarize_loop
from supervisor.config.preflight import preflight_warnings
from supervisor.diskfull import DiskFull
from supervisor.durable import NothingToResume, durable_supervisor
from supervisor.headless import HeadlessPrinter
from supervisor.interrupts import interrupt_proof, shutdown_signals
from supervisor.journal.schema import JOURNAL_NAME
from supervisor.journal.statelock import StateLocked
from supervisor.journal.writer import JournalError
from supervisor.spec import Config
from supervisor.statedir import StateDirError, ensure_state_dir
from supervisor.textsafe import for_terminal, for_terminal_line
from supervisor.worktree import (
    WorktreeError,
    WorktreeRefused,
    prepare_worktrees,
    remove_worktree,
)

if TYPE_CHECKING:
    from supervisor.journal.reader import JournalReader

COMMANDS = (
    "run",
    "check",
    "init",
    "clean",
    "land",
    "fork",
    "diff",
    "history",
    "status",
    "serve",
    "attach",
    "ctl",
    "notify",
    "mcp",
    "temporal",
)
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


def _state_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="to find the state dir")
    p.add_argument("--state-dir", type=Path, default=None)


def state_dir_of(args: argparse.Namespace) -> Path:
    """--state-dir, else the config's state dir, else .loopvisor/ beside the config
    (a config that no longer validates still names where its journal is)."""
    if args.state_dir is not None:
        return Path(args.state_dir)
    config_path = Path(args.config)
    if config_path.exists():
        try:
            return load_config(config_path).supervisor.state_dir
        except ConfigError:
            pass
    return config_path.resolve().parent / ".loopvisor"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of `command` alone (of every command when None: `--help`); see
    `subcommands` for why not all of them at every start."""
    parser = argparse.ArgumentParser(
        prog="loopvisor",
        description="Supervise many agent loops under one hard budget.",
        epilog="With no command: the TUI on ./loops.toml (headless when stdout is not a terminal).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    if command in (None, "run"):
        run = sub.add_parser("run", help="run the loops of a config")
        _config_arg(run)
        run.add_argument(
            "--headless", action="store_true", help="no UI: log lines (or --json) and an exit code"
        )
        run.add_argument("--json", action="store_true", help="headless JSON lines, summary last")
        run.add_argument("--quiet", action="store_true", help="headless: omit agent transcripts")
        run.add_argument("--resume", action="store_true", help="continue the newest unfinished run")
        oneline.add_arguments(run)

    if command in (None, "check"):
        check = sub.add_parser("check", help="validate a config and summarise each loop")
        check.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG)

    if command in (None, "clean"):
        clean = sub.add_parser("clean", help="remove a loop's git worktree (its branch is kept)")
        clean.add_argument("loops", nargs="+", metavar="LOOP")
        clean.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
        clean.add_argument("--state-dir", type=Path, default=None)
        clean.add_argument("--delete-branch", action="store_true", help="also delete the branch")
        clean.add_argument(
            "--force",
            action="store_true",
            help="remove it even with uncommitted changes or commits merged nowhere else",
        )
    subcommands.add(sub, ["land"], command)

    if command in (None, "history"):
        history = sub.add_parser("history", help="runs, or a loop's iterations, from the journal")
        history.add_argument("loop", nargs="?", help="a loop name (default: list runs)")
        history.add_argument(
            "--iteration", type=int, help="print that iteration's prompt and transcript"
        )
        history.add_argument(
            "--run", dest="run_id", help="a run id (default: the newest with LOOP)"
        )
        history.add_argument("--json", action="store_true")
        _state_args(history)

    if command in (None, "status"):
        status = sub.add_parser("status", help="the current or last run's loops, from the journal")
        status.add_argument("--json", action="store_true")
        _state_args(status)

    if command in (None, "init"):
        init = sub.add_parser("init", help="write a commented starter loops.toml")
        init.add_argument("path", nargs="?", type=Path, default=DEFAULT_CONFIG)
        init.add_argument("--force", action="store_true", help="overwrite an existing file")

    subcommands.add(
        sub, ["serve", "attach", "ctl", "diff", "fork", "notify", "mcp", "temporal"], command
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0] not in COMMANDS and args_list[0] not in ("-h", "--help")):
        # `loopvisor [CONFIG] [options]`: the TUI on a terminal, headless otherwise.
        args_list = ["run", *args_list]
        if not sys.stdout.isatty():
            args_list.append("--headless")
    parser = build_parser(args_list[0] if args_list[0] in COMMANDS else None)
    try:
        args = subcommands.valid_args(parser.parse_args(args_list))
    except SystemExit as exc:  # argparse exits 2 on a usage error: that code means "budget"
        return runtime.EXIT_USAGE if exc.code else 0
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        **subcommands.HANDLERS,
        "run": cmd_run,
        "check": cmd_check,
        "init": cmd_init,
        "clean": cmd_clean,
        "history": cmd_history,
        "status": cmd_status,
    }
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:  # Ctrl-C before a command's own handling: no traceback
        return runtime.EXIT_INTERRUPTED
    except BrokenPipeError:  # `loopvisor history ... | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except DiskFull as exc:  # at the start, or the run's end could not be journalled
        print(str(exc), file=sys.stderr)
        return runtime.EXIT_DISK_FULL
    except (
        ConfigError,
        WorktreeError,
        JournalError,
        StateLocked,
        StateDirError,
        NothingToResume,
    ) as exc:
        print(for_terminal(str(exc)), file=sys.stderr)
        return runtime.EXIT_USAGE


def load(path: Path, state_dir: Path | None = None) -> Config:
    config = load_config(path, state_dir=state_dir)
    for warning in config.warnings:
        print(warning, file=sys.stderr)
    return config


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 with one line per loop, or 3 with every problem (FILE:LINE:COL: ...).

    Summaries quote the file (models, markers, paths): shown, never obeyed.
    """
    config = load(args.config)
    for warning in preflight_warnings(config):  # warnings only: the exit code stays 0
        print(for_terminal(warning), file=sys.stderr)
    for loop in config.loops:
        print(for_terminal_line(summarize_loop(config, loop)))
    where = for_terminal_line(str(args.config))
    print(f"{where}: ok, {len(config.loops)} loop(s), {len(config.agents)} agent(s)")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    path: Path = args.path
    if path.exists() and not args.force:
        print(f"{path} exists; use --force to overwrite", file=sys.stderr)
        return runtime.EXIT_USAGE
    try:
        path.write_text(starter_toml(), encoding="utf-8")
    except OSError as exc:
        print(f"{path}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return runtime.EXIT_USAGE
    print(f"wrote {path}; check it: `loopvisor check {path}`; run it: `loopvisor run {path}`")
    return 0


def _reader(args: argparse.Namespace) -> JournalReader:
    # Imported here: `run` never reads the journal this way, and starts sooner without.
    from supervisor.journal.reader import JournalReader

    state_dir = state_dir_of(args)
    if not (state_dir / JOURNAL_NAME).exists():
        raise JournalError(f"no journal in {state_dir}: nothing has run there yet")
    return JournalReader(state_dir)


def cmd_history(args: argparse.Namespace) -> int:
    from supervisor.journal.render import format_history, format_iteration, format_runs

    with _reader(args) as reader:
        if args.loop is None:
            runs = reader.runs()
            print(
                json.dumps([dataclasses.asdict(r) for r in runs])
                if args.json
                else format_runs(runs)
            )
        elif args.iteration is not None:
            detail = reader.iteration_detail(args.loop, args.iteration, run_id=args.run_id)
            if args.json:
                print(json.dumps(detail._asdict(), default=str))
            else:
                print(format_iteration(args.loop, args.iteration, detail))
        elif args.json:
            print(json.dumps(reader.history_json(args.loop, run_id=args.run_id)))
        else:
            rows = reader.loop_iterations(args.loop, run_id=args.run_id)
            charged = reader.loop_charged(args.loop, run_id=args.run_id) if rows else None
            forked = reader.parents(rows[0].run_id).get(args.loop, "") if rows else ""
            print(format_history(args.loop, rows, charged, forked))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from supervisor.journal.render import format_status

    with _reader(args) as reader:
        if args.json:
            print(json.dumps(reader.status_json()))
        else:
            run = reader.latest_run()
            rows = reader.status(run.run_id) if run else []
            print(format_status(run, rows, reader.parents(run.run_id) if run else {}))
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    """Remove each LOOP's worktree; one whose removal would lose work is refused (it
    says what would be lost) unless --force, and the others are still removed."""
    config = load(args.config, args.state_dir)
    loops = []
    for name in args.loops:
        found = find_loop(config, name)  # a fork or added loop too
        if found is None:
            message = f"no loop named {name!r} in {args.config} or the journal"
            print(for_terminal(message), file=sys.stderr)
            return runtime.EXIT_USAGE
        loops.append(found)
    code = 0
    for loop in loops:
        try:
            done = remove_worktree(loop, delete_branch=args.delete_branch, force=args.force)
        except WorktreeRefused as exc:
            print(for_terminal(str(exc)), file=sys.stderr)
            code = runtime.EXIT_FAILED
            continue
        print(for_terminal(done))
    return code


def cmd_run(args: argparse.Namespace) -> int:
    if oneline.wanted(args):
        if args.config != DEFAULT_CONFIG:
            print("run -p runs one loop without a config: give -p or a config", file=sys.stderr)
            return runtime.EXIT_USAGE
        config = oneline.one_line_config(args, Path.cwd())
        if args.print_config:
            print(config.text, end="")
            return 0
    else:
        config = load(args.config, args.state_dir)
    ensure_state_dir(config.supervisor.state_dir)  # before worktrees are made in it
    for line in prepare_worktrees(config):
        print(for_terminal(line), file=sys.stderr)
    headless = args.headless or args.json or not sys.stdout.isatty()
    if not headless:
        from supervisor.cli import console  # the UI, only for the command that opens it

        return console.run_tui(config, resume=args.resume)
    return interrupt_proof(functools.partial(anyio.run, _run_headless, config, args))


async def _run_headless(config: Config, args: argparse.Namespace) -> int:
    printer = HeadlessPrinter(json_lines=args.json, transcripts=not args.quiet)
    # The receiver spans the journal and lock too: a second Ctrl-C while they are
    # being closed is absorbed (see interrupts.py).
    with shutdown_signals() as signals:
        async with durable_supervisor(config, resume=args.resume) as supervisor:
            return await run_with_printer(supervisor, printer, signals)


async def run_with_printer(
    supervisor: runtime.Supervisor, printer: HeadlessPrinter, signals: AsyncIterator[int]
) -> int:
    """Run to the end with the printer as a sink (every event, formatted as published:
    `HeadlessPrinter.record`); the first of `signals` stops the run cleanly (130),
    later ones are absorbed while children are killed."""
    results: list[int] = []
    supervisor.add_sink(printer.record)
    async with anyio.create_task_group() as tg:
        tg.start_soon(printer.write_out)
        try:
            async with anyio.create_task_group() as run_tg:
                run_tg.start_soon(_cancel_on_signal, signals, run_tg.cancel_scope)
                summary = await supervisor.run()
                results.append(summary.exit_code)
                run_tg.cancel_scope.cancel()
        finally:
            printer.finish()
        supervisor.bus.close()
    await supervisor.aclose()
    return results[0] if results else runtime.EXIT_INTERRUPTED


async def _cancel_on_signal(signals: AsyncIterator[int], scope: anyio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return
