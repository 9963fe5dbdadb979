"""Ctrl-C (and SIGTERM, SIGHUP) end a run once and cleanly: exit 130, no traceback,
the journal finished, no child left running, however many times it is pressed.

The async side hears signals through `anyio.open_signal_receiver`. Two things made a
second Ctrl-C 10-200 ms after the first one dangerous:

- closing that receiver puts Python's default SIGINT handler back, which raises
  KeyboardInterrupt wherever the code happens to be: it landed in the journal's
  close (a traceback) or in a journal transaction (exit 3, "cannot rollback");
- while the interpreter finalizes it resets Python-level handlers to SIG_DFL, so a
  Ctrl-C during exit killed the process by SIGINT (exit -2, the summary said 130).

So a front-end opens `shutdown_signals()` once, around everything that must not be
interrupted (the durable supervisor: lock, journal, run, teardown), and runs under
`interrupt_proof`, which ignores SIGINT from the moment the async part is over and
turns a KeyboardInterrupt that still escaped (from the few instructions between the
receiver closing and SIGINT being ignored) into exit 130 without a traceback.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager

import anyio

from supervisor.runtime import EXIT_INTERRUPTED

__all__ = ["SHUTDOWN_SIGNALS", "ignore_sigint", "interrupt_proof", "shutdown_signals"]

SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def shutdown_signals(
    *signals: signal.Signals,
) -> Iterator[AsyncIterator[int]]:
    """Receive `signals` (default: SIGINT, SIGTERM, SIGHUP) until the block ends; when it
    ends, SIGINT is ignored at once, before a late Ctrl-C can raise anywhere. For a
    front-end that owns the process: the process ignores Ctrl-C from then on."""
    try:
        with anyio.open_signal_receiver(*(signals or SHUTDOWN_SIGNALS)) as received:
            yield received
    finally:
        ignore_sigint()


def ignore_sigint() -> None:
    """From now on Ctrl-C does nothing (kept through interpreter shutdown: SIG_IGN is)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def interrupt_proof(command: Callable[[], int]) -> int:
    """Run `command`; a KeyboardInterrupt escaping it is exit 130, and afterwards SIGINT
    is ignored until the process has exited."""
    try:
        try:
            return command()
        finally:
            ignore_sigint()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
