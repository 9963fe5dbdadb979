"""`loopvisor land LOOP [--squash] [--into BRANCH] [--push [REMOTE]] [--pr]`.

When a supervisor serves the state dir, the landing goes through its `land` control
op (the same as the console's `L`), so a loop whose `on_success` landing failed and
waits for a person is settled by it. Otherwise it is done here, on the git repo,
after checking in the journal that no live run is in the middle of the loop (its
agent could be writing the files being committed).

Exit codes: 0 landed (or nothing to land); 1 refused, a conflict (nothing changed),
or a push / pull request failed; 3 bad usage or config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio

from supervisor import events as ev
from supervisor.config.load import load_config
from supervisor.control.client import RemoteSupervisor
from supervisor.control.protocol import NotServing, RemoteError, ServerRefused, ServerTimeout
from supervisor.control.protocol import socket_path as control_socket
from supervisor.journal.schema import JOURNAL_NAME, JournalError
from supervisor.land import LandError, LandRequest, land
from supervisor.land_report import pr_text, record_from_journal
from supervisor.redact import Redactor
from supervisor.runtime import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from supervisor.spec import Config, LoopSpec
from supervisor.textsafe import for_terminal
from supervisor.worktree import branch_name

_IDLE = ev.END_STATES | ev.ATTENTION_STATES | {"scheduled"}
"""States in which a loop's worktree is not being written by its run."""


def cmd_land(args: argparse.Namespace) -> int:
    config = load_config(args.config, state_dir=args.state_dir)
    request = LandRequest(squash=args.squash, into=args.into, push=args.push, pr=args.pr)
    problem = request.problem()
    if problem is not None:
        print(f"loopvisor land: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        # A supervisor serving the state dir knows its loops, forks included.
        message = _served(config, args.loop, request)
        if message is None:
            try:
                spec = config.loop(args.loop)
            except KeyError:
                print(
                    for_terminal(f"no loop named {args.loop!r} in {args.config}"), file=sys.stderr
                )
                return EXIT_USAGE
            message = _here(config, spec, request)
    except (LandError, RemoteError, ServerRefused, ServerTimeout) as exc:
        print(for_terminal(str(exc)), file=sys.stderr)
        return EXIT_FAILED
    print(for_terminal(message))
    return EXIT_OK


def _served(config: Config, loop: str, request: LandRequest) -> str | None:
    """Land through the supervisor serving the state dir; None when none serves it."""
    sock = control_socket(config.supervisor.state_dir)
    if not (sock.exists() or sock.is_symlink()):
        return None

    async def call() -> str:
        async with RemoteSupervisor(sock, state_dir=config.supervisor.state_dir) as remote:
            return await remote.land(
                loop,
                squash=request.squash,
                into=request.into,
                push=request.push,
                pr=request.pr,
            )

    try:
        return anyio.run(call)
    except NotServing:  # a stale socket: nobody is there
        return None


def _here(config: Config, spec: LoopSpec, request: LandRequest) -> str:
    state_dir = config.supervisor.state_dir
    _refuse_if_running(state_dir, spec.name)
    redact = Redactor.for_config(config).text

    def text(base: str) -> tuple[str, str]:
        record = record_from_journal(state_dir, spec.name)
        return pr_text(spec, record, branch_name(spec) if spec.worktree else "", base, redact)

    return redact(land(spec, request, text))


def _refuse_if_running(state_dir: Path, loop: str) -> None:
    """LandError when a live run (one without a control socket: `run`, the console) is
    in the middle of the loop, by its journal."""
    if not (state_dir / JOURNAL_NAME).exists():
        return
    try:
        from supervisor.journal.reader import JournalReader  # not on `run`'s path

        with JournalReader(state_dir) as reader:
            run = reader.latest_run()
            if run is None or not run.live:
                return
            state = next((row.state for row in reader.status(run.run_id) if row.loop == loop), "")
    except JournalError:
        return
    if state and state not in _IDLE:
        raise LandError(
            f"{loop}: it is {state} in the live run {run.run_id}: land it once it has ended or "
            "is paused (in its console: L)"
        )
