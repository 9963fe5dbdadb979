"""`loopvisor serve`, `attach` and `ctl`: the long-lived supervisor and its remote controls.

Their arguments are in `subcommands` (the main parser is built without importing this
module). `ctl` and `attach` find the socket from `--socket`, `--state-dir`, or the
state dir of `--config` (default ./loops.toml) read leniently, so that they work
while loops.toml is broken (e.g. to see why `ctl reload` rejects it).

Exit codes: 0 done; 1 the supervisor refused the operation (unknown loop, ...) or
the connection (too many clients), did not answer in time, or the connection
dropped; 3 nobody serves that state dir, bad usage, or `reload`
of an invalid config; 130 interrupted (Ctrl-C, also how `ctl tail` ends).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import re
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import anyio

from supervisor import events as ev
from supervisor.api import RunSnapshot
from supervisor.cli import subcommands
from supervisor.config.load import DEFAULT_STATE_DIR, ConfigError
from supervisor.control.client import RemoteSupervisor
from supervisor.control.protocol import (
    NotServing,
    RemoteError,
    ServerRefused,
    ServerTimeout,
    socket_path,
)
from supervisor.durations import format_duration, parse_duration
from supervisor.headless import HeadlessPrinter
from supervisor.interrupts import interrupt_proof
from supervisor.lines import TranscriptLine, stream_tag
from supervisor.render import describe
from supervisor.runtime import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from supervisor.sizes import INJECT_MAX_BYTES, PROMPT_TEMPLATE_MAX_BYTES, format_size, read_at_most
from supervisor.status_table import ctl_status_layout, name_width
from supervisor.textsafe import decode, for_terminal, for_terminal_line

COMMANDS = ("serve", "ctl", "attach")
EXIT_NOT_SERVING = EXIT_USAGE
Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """A stand-alone `loopvisor {serve,ctl,attach}` (the main CLI adds them itself)."""
    parser = argparse.ArgumentParser(prog="loopvisor")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    subcommands.add(sub, COMMANDS, None)
    args = subcommands.valid_args(parser.parse_args(argv))
    try:
        return HANDLERS[args.command](args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE


# -- where the server is -------------------------------------------------------------
_HEADER = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]")
_STATE_DIR = re.compile(r"""^\s*state_dir\s*=\s*(?:"([^"]*)"|'([^']*)')""")


def lenient_state_dir(config: Path) -> Path:
    """The state dir a config names, read without validating the rest of it (a line
    scan when the file is not even TOML: a broken file must not hide the server)."""
    text = ""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = config.read_text(encoding="utf-8-sig")
    raw: Any = None
    try:
        section = tomllib.loads(text).get("supervisor")
        raw = section.get("state_dir") if isinstance(section, dict) else None
    except tomllib.TOMLDecodeError:
        table = ""
        for line in text.splitlines():
            if header := _HEADER.match(line):
                table = header.group(1)
            elif table == "supervisor" and (m := _STATE_DIR.match(line)):
                raw = m.group(1) if m.group(1) is not None else m.group(2)
    name = raw if isinstance(raw, str) and raw.strip() else DEFAULT_STATE_DIR
    return (config.resolve().parent / name).resolve()


def target(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """(socket path, state dir or None) from --socket / --state-dir / --config."""
    if args.socket is not None:
        return args.socket.resolve(), None
    state_dir = args.state_dir.resolve() if args.state_dir else lenient_state_dir(args.config)
    return socket_path(state_dir), state_dir


# -- serve and attach ---------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from supervisor.control.serve import serve_detached, serve_foreground

    if args.detach:
        return serve_detached(args.config, args.state_dir, resume=args.resume)
    return serve_foreground(args.config, args.state_dir, resume=args.resume)


def cmd_attach(args: argparse.Namespace) -> int:
    sock, state_dir = target(args)
    try:
        from supervisor.cli import console  # the UI, only for the command that opens it
    except ImportError as exc:
        print(f"the TUI is not available: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        anyio.run(console.attach, sock, state_dir)
    except NotServing as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_NOT_SERVING
    return EXIT_OK


# -- ctl -------------------------------------------------------------------------------
def cmd_ctl(args: argparse.Namespace) -> int:
    sock, state_dir = target(args)
    return interrupt_proof(functools.partial(anyio.run, _ctl, args, sock, state_dir))


async def _ctl(args: argparse.Namespace, sock: Path, state_dir: Path | None) -> int:
    if args.action == "inject" and args.text == "-":  # before connecting: a human may type
        raw = read_at_most(sys.stdin.buffer, INJECT_MAX_BYTES)  # longer than the handshake
        if raw is None:
            message = f"stdin is over the inject limit of {format_size(INJECT_MAX_BYTES)}"
            return _failed(args, f"loopvisor ctl inject: {message}", "usage", EXIT_USAGE)
        args.text = decode(raw)
    try:
        async with RemoteSupervisor(sock, state_dir=state_dir) as remote:
            return await CTL[args.action](remote, args)
    except ServerRefused as exc:  # someone serves, but not us now: worth retrying
        return _failed(args, str(exc), "refused", EXIT_FAILED)
    except ServerTimeout as exc:
        return _failed(args, str(exc), "timeout", EXIT_FAILED)
    except NotServing as exc:
        return _failed(args, str(exc), "not_serving", EXIT_NOT_SERVING)
    except RemoteError as exc:
        code = EXIT_USAGE if exc.kind in ("config", "protocol") else EXIT_FAILED
        return _failed(args, f"loopvisor: {exc}", exc.kind, code)
    except UsageError as exc:
        return _failed(args, f"loopvisor ctl {args.action}: {exc}", "usage", EXIT_USAGE)


def _failed(args: argparse.Namespace, message: str, kind: str, code: int) -> int:
    """The message on stderr; with --json also `{"ok": false, ...}` on stdout."""
    print(for_terminal(message), file=sys.stderr)
    if args.json:
        print(json.dumps({"ok": False, "error": message, "kind": kind, "exit_code": code}))
    return code


class UsageError(Exception):
    pass


def _done(args: argparse.Namespace, text: str, result: Any = None) -> int:
    if args.json:
        print(json.dumps({"ok": True, "result": result}))
    else:
        print(for_terminal(text))
    return EXIT_OK


async def _status(remote: RemoteSupervisor, args: argparse.Namespace) -> int:
    snap = await remote.snapshot()
    if args.json:
        print(json.dumps(snap.to_dict(), indent=2, default=str))
    else:
        print(format_status(snap, remote.hello))
    return EXIT_OK


def format_status(snap: RunSnapshot, hello: dict[str, Any]) -> str:
    up = format_duration(round(max(0.0, time.time() - snap.started_at)))
    where = for_terminal_line(str(snap.config_path))
    lines = [f"run {snap.run_id} · {where} · pid {hello.get('pid')} · up {up}"]
    lines += ctl_status_layout(name_width(snap.loops)).table(snap.loops)
    b = snap.budget
    tok = f"{b.tokens:,}" + (f" of {b.limits.tokens:,}" if b.limits.tokens else "")
    usd = f"${b.usd:.4f}" + (f" of ${b.limits.usd:.2f}" if b.limits.usd else "")
    lines.append(f"total: {tok} tokens · {usd} · slots {b.slots_in_use}/{b.slots_total}")
    return "\n".join(lines)


async def _pause(remote: RemoteSupervisor, args: argparse.Namespace) -> int:
    await remote.pause(args.loop)
    return _done(args, f"paused {args.loop or 'every loop'} (at its next safe point)")


async def _resume(remote: RemoteSupervisor, args: argparse.Namespace) -> int:
    await remote.resume(args.loop)
    return _done(args, f"resumed {args.loop or 'every loop'}")


async def _stop(remote: RemoteSupervisor, args: argparse.Namespace) -> int:
    if args.loop is None and not args.all:
        raise UsageError("name a LOOP, or --all to stop every loop")
    await remote.stop(args.loop)
    return _done(args, f"stopped {args.loop or 'every loop'}")


async def _restart(remote: RemoteSupervisor, args: argparse.Namespace) -> int:
    await remote.restart(args.loop)
    return _done(args, f"restarted {args.loop}")


async def _inject(remote: RemoteSupervisor, args: argparse.Namespace) -> int:
    await remote.inject(args.loop, args.text)  # `-` was read from stdin by _ctl
    return _done(args, f"{args.loop}: message added to its next prompt")


def _limit(value: str | None, kind: str) -> tuple[bool, float | int | None]:
    """(given?, value): 'none' means unlimited."""
    if value is None:
        return False, None
    if value.strip().lower() in ("none", "unlimited"):
        return True, None
    try:
        if kind == "tokens":
            return True, int(value.replace("_", ""))
        if kind == "usd":
            return True, float(value)
        return True, parse_duration(value)
    except (ValueError, ConfigError) as exc:
        raise UsageError(f"--{kind} {value!r}: {exc}") from None


def _prompt_of(args: argparse.Namespace) -> str | None:
    """`--prompt TEXT` or the text of `--prompt-file F` (read like a loops.toml
    prompt_file: at most the template limit, UTF-8); None: neither given."""
    if args.prompt is not None and args.prompt_file is not None:
        raise UsageError("give --prompt or --prompt-file, not both")
    if args.prompt_file is None:
        return args.prompt  # type: ignore[no-any-return]
    try:
        with args.prompt_file.open("rb") as fh:
            raw = read_at_most(fh, PROMPT_TEMPLATE_MAX_BYTES)
    except OSError as exc:
        raise UsageError(f"cannot read {args.prompt_file}: {exc.strerror}") from None
    if raw is None:
        limit = format_size(PROMPT_TEMPLATE_MAX_BYTES)
        raise UsageError(f"{args.prompt_file} is over the prompt limit of {limit}")
    try:  # like a prompt_file in loops.toml: text that is not UTF-8 is refused
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"cannot read {args.prompt_file}: {exc}") from None


async def _edit(remote: RemoteSupervisor, args: argparse.Namespace) -> int:
    prompt = _prompt_of(args)
    given = {k: _limit(getattr(args, k), k) for k in ("tokens", "usd", "wall", "cpu")}
    changes = {k: v for k, (ok, v) in given.items() if ok}
    if prompt is None and args.max_iterations is None and not changes:
        raise UsageError(
            "nothing to change: give --prompt/--prompt-file, --max-iterations,"
            " --tokens, --usd, --wall or --cpu"
        )
    limits = None
    if changes:
        snap = await remote.snapshot()
        loop = next((x for x in snap.loops if x.name == args.loop), None)
        if loop is None:
            raise RemoteError(f"no loop named {args.loop!r}")
        limits = dataclasses.replace(loop.limits, **changes)  # type: ignore[arg-type]
    await remote.edit(args.loop, prompt=prompt, max_iterations=args.max_iterations, limits=limits)
    what = [
        n for n, v in (("prompt", prompt), ("max_iterations", args.max_iterations)) if v is not None
    ]
    what += [f"budget.{k}" for k in changes]
    return _done(args, f"{args.loop}: {', '.join(what)} changed (from its next iteration)")


async def _add(remote: RemoteSupervisor, args: argparse.Namespace) -> int:
    prompt = _prompt_of(args)
    given = {k: _limit(getattr(args, k), k) for k in ("tokens", "usd", "wall", "cpu")}
    changes = {k: v for k, (ok, v) in given.items() if ok}
    limits = None
    if changes:  # the like-loop's limits, with the ones given replaced
        snap = await remote.snapshot(tail=0)
        like = next((x for x in snap.loops if x.name == args.like), None)
        if like is None:
            raise RemoteError(f"no loop named {args.like!r}")
        limits = dataclasses.replace(like.limits, **changes)  # type: ignore[arg-type]
    message = await remote.add(
        args.name,
        like=args.like,
        prompt=prompt,
        max_iterations=args.max_iterations,
        limits=limits,
    )
    return _done(args, message, message)


async def _budget(remote: RemoteSupervisor, args: argparse.Namespace) -> int:
    given = {k: _limit(getattr(args, k), k) for k in ("tokens", "usd", "wall", "cpu")}
    changes = {k: v for k, (ok, v) in given.items() if ok}
    if not changes:
        raise UsageError("nothing to change: give --tokens, --usd, --wall or --cpu")
    snap = await remote.snapshot()
    limits = dataclasses.replace(snap.budget.limits, **changes)  # type: ignore[arg-type]
    await remote.budget(limits)
    return _done(args, "global budget: " + ", ".join(f"{k} {v}" for k, v in changes.items()))


async def _reload(remote: RemoteSupervisor, args: argparse.Namespace) -> int:
    report = await remote.reload()
    if args.json:
        print(json.dumps({"ok": True, "result": report}))
        return EXIT_OK
    applied, restart = report.get("applied", []), report.get("needs_restart", [])
    kept = report.get("kept", [])
    if not applied and not restart and not kept:
        print("reloaded: nothing changed")
    for line in applied:
        print(f"applied: {for_terminal_line(str(line))}")
    for line in kept:
        print(f"kept: {for_terminal_line(str(line))}")
    for line in restart:
        print(f"not applied: {for_terminal_line(str(line))}")
    return EXIT_OK


async def _shutdown(remote: RemoteSupervisor, args: argparse.Namespace) -> int:
    summary: ev.RunFinished | None = None
    async with contextlib.AsyncExitStack() as stack:
        events = None
        with contextlib.suppress(RemoteError):  # too many subscribers: no summary, still stop
            events = await stack.enter_async_context(remote.subscribe(max_buffer=100_000))
        await remote.shutdown()
        with anyio.move_on_after(args.timeout) as waited:
            if events is None:
                await remote.wait_closed()
            else:
                async for event in events:  # ends when the server closes the connection
                    if isinstance(event, ev.RunFinished):
                        summary = event
    if waited.cancelled_caught:
        print(f"the supervisor did not exit within {args.timeout:g}s", file=sys.stderr)
        return EXIT_FAILED
    where = remote.state_dir or remote.socket_path
    if args.json:
        print(json.dumps({"ok": True, "result": summary.to_dict() if summary else None}))
    elif summary is not None:
        HeadlessPrinter(stream=sys.stdout).print_event(summary)
    else:  # the run had ended before: its summary went out then (see serve.log)
        print(for_terminal(f"loopvisor serving {where} has shut down"))
    return EXIT_OK


async def _tail(remote: RemoteSupervisor, args: argparse.Namespace) -> int:
    async with remote.subscribe_with_snapshot(max_buffer=10_000) as (snap, events):
        loop = next((x for x in snap.loops if x.name == args.loop), None)
        if loop is None:
            raise RemoteError(f"no loop named {args.loop!r}")
        printer = TailPrinter(args.loop, sys.stdout)
        printer.history(loop.transcript_tail[-max(0, args.lines) :] if args.lines else ())
        async for event in events:
            printer.feed(event)
    print("\nloopvisor: the connection closed", file=sys.stderr)
    return EXIT_FAILED


class TailPrinter:
    """One loop's transcript as plain text: agent text as it streams, other events as lines.

    For a terminal: controls but newline and tab are shown (`\\x1b`), never obeyed.
    """

    def __init__(self, loop: str, out: TextIO) -> None:
        self.loop = loop
        self.out = out
        self._at_start = True

    def history(self, lines: Sequence[TranscriptLine]) -> None:
        for line in lines:
            self._line(line.text)

    def feed(self, event: ev.Event) -> None:
        if isinstance(event, ev.EventsDropped):
            self._line(f"[… {event.count} events skipped: this terminal fell behind]")
            return
        if getattr(event, "loop", None) != self.loop:
            if isinstance(event, ev.Notice) and event.level == "error" and event.loop is None:
                self._line(f"[{event.level}] {event.message}")
            return
        if isinstance(event, ev.AgentOutput):
            tag = stream_tag(event.stream)
            for piece in event.text.splitlines(keepends=True):
                if self._at_start and tag:
                    self.out.write(tag)
                self.out.write(for_terminal(piece))
                self._at_start = piece.endswith("\n")
            self.out.flush()
            return
        line = describe(event)
        if line is not None:
            self._line(line.text)

    def _line(self, text: str) -> None:
        if not self._at_start:
            self.out.write("\n")
        self.out.write(for_terminal(text) + "\n")
        self._at_start = True
        self.out.flush()


HANDLERS: dict[str, Handler] = {"serve": cmd_serve, "ctl": cmd_ctl, "attach": cmd_attach}
"""command -> handler (`subcommands.cmd_remote` imports this module and calls it)."""

CTL: dict[str, Callable[[RemoteSupervisor, argparse.Namespace], Awaitable[int]]] = {
    "status": _status,
    "pause": _pause,
    "resume": _resume,
    "stop": _stop,
    "restart": _restart,
    "inject": _inject,
    "edit": _edit,
    "budget": _budget,
    "add": _add,
    "reload": _reload,
    "shutdown": _shutdown,
    "tail": _tail,
}
