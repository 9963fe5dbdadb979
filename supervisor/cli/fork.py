"""`loopvisor fork LOOP --iteration N [--name NEW] [--prompt-file F]`.

A fork is a new loop of a running supervisor (`supervisor/fork.py`), so this asks the
one serving the state dir, through its `fork` control op (the same as `f` on the
console's history screen). With no supervisor serving it, nothing is forked and the
message says how to get one: `loopvisor serve` runs the config's loops in the
background; fork their iterations while it runs (or `serve --resume` a run whose loops
have not all ended). The fork then shows in `status`, `history`, `diff`, `land` and
the console like any loop of the run, and `--resume` brings it back.

Exit codes: 0 forked; 1 refused (unknown loop or iteration, no worktree, a name
taken) or no supervisor serving the state dir; 3 bad usage or config.
"""

from __future__ import annotations

import argparse
import sys

import anyio

from supervisor.config.load import load_config
from supervisor.control.client import RemoteSupervisor
from supervisor.control.protocol import NotServing, RemoteError, ServerRefused, ServerTimeout
from supervisor.control.protocol import socket_path as control_socket
from supervisor.runtime import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from supervisor.textsafe import for_terminal


def _fail(text: str, code: int = EXIT_FAILED) -> int:
    print(for_terminal(f"loopvisor fork: {text}"), file=sys.stderr)
    return code


def cmd_fork(args: argparse.Namespace) -> int:
    if args.iteration < 1:
        return _fail("iteration numbers start at 1", EXIT_USAGE)
    prompt = None
    if args.prompt_file is not None:
        try:
            prompt = args.prompt_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return _fail(f"cannot read the prompt file {args.prompt_file}: {exc}", EXIT_USAGE)
    config = load_config(args.config, state_dir=args.state_dir)
    state_dir = config.supervisor.state_dir
    sock = control_socket(state_dir)
    not_served = (
        f"no supervisor serves {state_dir}: a fork is a new loop of a running supervisor."
        f" Start one with `loopvisor serve {args.config}` and fork while it runs"
        " (or fork from the console's history screen: f)"
    )
    if not (sock.exists() or sock.is_symlink()):
        return _fail(not_served)

    async def call() -> str:
        async with RemoteSupervisor(sock, state_dir=state_dir) as remote:
            return await remote.fork(
                args.loop, iteration=args.iteration, name=args.name, prompt=prompt
            )

    try:
        message = anyio.run(call)
    except NotServing:
        return _fail(not_served)
    except (RemoteError, ServerRefused, ServerTimeout) as exc:
        return _fail(str(exc))
    print(for_terminal(message))
    return EXIT_OK
