"""Where `loopvisor` and `python -m supervisor` start: Ctrl-C is exit 130 from the
first instruction, before the rest of loopvisor is imported.

Importing the command line takes ~0.2 s, and seconds on a loaded machine. A Ctrl-C in
that window used to raise KeyboardInterrupt inside some import: a traceback and exit
-2. Nothing has been started then (no journal, no lock, no child), so this module,
which imports only the standard library, makes SIGINT end the process at once with
130 until the command line is loaded; from then on `cli.main` and
`interrupts.interrupt_proof` handle it (the shutdown of a run), and once the command
is over SIGINT is ignored until the process has exited. Not covered: a Ctrl-C
during the interpreter's own start-up (`site`), before any loopvisor code runs.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

EXIT_INTERRUPTED = 130
"""`runtime.EXIT_INTERRUPTED`, repeated here so that this module imports nothing of
loopvisor (a test holds the two equal)."""


def _exit_interrupted(signum: int, frame: FrameType | None) -> None:
    """SIGINT during the imports: nothing to clean up yet, so end now, quietly."""
    os._exit(EXIT_INTERRUPTED)


def main() -> int:
    signal.signal(signal.SIGINT, _exit_interrupted)
    try:
        try:
            from supervisor.cli import main as cli_main

            signal.signal(signal.SIGINT, signal.default_int_handler)
            return cli_main.main()
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the command is over
    except KeyboardInterrupt:  # one that escaped before SIG_IGN: still no traceback
        return EXIT_INTERRUPTED
