"""Step in: take a paused loop's conversation over by hand, then hand it back.

- API and sim agents (`StepIn.chat`): a chat screen on the loop's own conversation.
- Claude Code (`StepIn.resume_argv`): the TUI suspends and the real `claude --resume
  SESSION` runs in this terminal; when it exits the loop is handed back and continues
  from that session.

The interactive command is the one child not started through `supervisor.process`:
it must share the terminal's foreground process group to read the keyboard. It runs
as an asyncio subprocess (not `subprocess.run`) because the supervisor shares this
event loop: other loops keep running while the operator types. Repaints are held
(`batch_update`) so nothing is drawn over it, and SIGINT is caught (not ignored, so
the child still gets the default) so that ctrl+c reaches only the child.
"""

from __future__ import annotations

import shlex
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import anyio
from textual.app import SuspendNotSupported

from supervisor.api import ControlError, StepIn

if TYPE_CHECKING:
    from tui.actions import OperatorActions


async def step_in(app: OperatorActions, name: str) -> None:
    app.notify(f"stepping into {name}: pausing it…", timeout=3)
    try:
        info = await app.handle.step_in(name)
    except ControlError as exc:
        app.notify(str(exc), title=f"step in {name}: refused", severity="error")
        return
    finally:
        app.poke()
    if info.chat:
        from tui.screens.chat import ChatScreen

        await app.push_screen(ChatScreen(name, agent_kind=info.agent_kind))
        return
    if info.resume_argv:
        await _run_in_terminal(app, info)
        return
    app.notify(
        f"{name} is paused. A {info.agent_kind} agent has no conversation to take over: "
        "edit (e) or inject (i), then resume (p).",
        title="step in",
        timeout=15,
    )


async def _run_in_terminal(app: OperatorActions, info: StepIn) -> None:
    argv = list(info.resume_argv or ())
    command = shlex.join(argv)
    try:
        with app.suspend(), app.batch_update(), _sigint_to_child_only():
            process = await anyio.open_process(
                argv, stdin=None, stdout=None, stderr=None, cwd=info.workspace
            )
            await process.wait()
    except SuspendNotSupported:
        app.notify(
            f"this terminal cannot be handed over; run it yourself:\n"
            f"cd {shlex.quote(info.workspace)} && {command}\nthen resume the loop (p)",
            title=f"{info.loop} is paused",
            severity="warning",
            timeout=60,
        )
        return
    except OSError as exc:
        app.notify(f"{command}: {exc}", title="step in failed", severity="error")
        return
    try:
        await app.handle.hand_back(info.loop)
    except ControlError as exc:
        app.notify(str(exc), title="hand back refused", severity="error")
    else:
        app.notify(f"{info.loop} handed back: it continues from your session")
    app.poke()


@contextmanager
def _sigint_to_child_only() -> Iterator[None]:
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
