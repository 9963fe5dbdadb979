"""`loopvisor temporal dev`: a Temporal dev server for one box (docs/temporal.md).

The `temporalio` SDK and the `temporal` binary come with `loopvisor[temporal]`; without
them the command says so and exits 3 (no traceback). The server runs in the
foreground until Ctrl-C (or SIGTERM), which stops it and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio

from supervisor.cli.remote import lenient_state_dir
from supervisor.interrupts import interrupt_proof, shutdown_signals
from supervisor.runtime import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from supervisor.statedir import StateDirError, ensure_state_dir

NEEDS_EXTRA = "loopvisor temporal needs the Temporal SDK: pip install 'loopvisor[temporal]'"


def cmd_temporal(args: argparse.Namespace) -> int:
    try:
        from supervisor.temporal import devserver
    except ImportError as exc:  # pragma: no cover - the dev install has the extra
        print(f"{NEEDS_EXTRA} ({exc})", file=sys.stderr)
        return EXIT_USAGE
    state_dir = args.state_dir.resolve() if args.state_dir else lenient_state_dir(args.config)
    try:
        devserver.temporal_binary()
        import temporalio  # noqa: F401  (said now, not after the server started)
    except ImportError as exc:
        print(f"{NEEDS_EXTRA} ({exc})", file=sys.stderr)
        return EXIT_USAGE
    except devserver.DevServerError as exc:
        print(f"loopvisor temporal dev: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        ensure_state_dir(state_dir)  # private, no links: the server's SQLite file is in it
    except StateDirError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    return interrupt_proof(lambda: anyio.run(_dev, args, state_dir))


async def _dev(args: argparse.Namespace, state_dir: Path) -> int:
    from supervisor.temporal import devserver

    def ready(target: str, db_file: Path) -> None:
        print(
            f"Temporal dev server on {target} (namespace {args.namespace}; state in"
            f" {db_file}). Ctrl-C stops it.",
            flush=True,
        )

    def log(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    code = EXIT_OK
    with shutdown_signals() as signals:
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    print("stopping the Temporal dev server", file=sys.stderr, flush=True)
                    tg.cancel_scope.cancel()
                    return

            async def serve() -> None:
                nonlocal code
                try:
                    exited = await devserver.serve_dev(
                        state_dir,
                        ip=args.ip,
                        port=args.port,
                        namespace=args.namespace,
                        on_ready=ready,
                        log=log,
                    )
                except devserver.DevServerError as exc:
                    print(f"loopvisor temporal dev: {exc}", file=sys.stderr)
                    code = EXIT_FAILED
                else:
                    if exited != 0:
                        print(f"the Temporal dev server exited with {exited}", file=sys.stderr)
                        code = EXIT_FAILED
                tg.cancel_scope.cancel()

            tg.start_soon(stop_on_signal)
            tg.start_soon(serve)
    return code
