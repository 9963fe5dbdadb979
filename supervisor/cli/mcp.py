"""`loopvisor mcp`: an MCP server over stdio for a served supervisor
(`supervisor.control.mcp`; the `mcp` SDK is the optional extra `loopvisor[mcp]`).

It finds the socket like `ctl` (`--socket`, `--state-dir`, or the state dir of
`--config`) and imports the SDK only when it runs, so no other command pays for it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from supervisor.cli.remote import target
from supervisor.runtime import EXIT_OK, EXIT_USAGE

Handler = Callable[[argparse.Namespace], int]


def cmd_mcp(args: argparse.Namespace) -> int:
    sock, state_dir = target(args)
    try:
        from supervisor.control.mcp import serve_stdio
    except ImportError as exc:
        print(
            f"loopvisor mcp needs the MCP SDK: pip install 'loopvisor[mcp]' ({exc})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    serve_stdio(sock, state_dir)
    return EXIT_OK
