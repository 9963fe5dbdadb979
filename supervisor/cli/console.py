"""The console opened: the only module where the headless core and the Textual UI meet.

`cli.main` (`loopvisor [CONFIG]` on a terminal) and `cli.remote` (`loopvisor attach`)
import this module inside the command that opens the console, so a headless run,
`serve`, `ctl` and `status` never load textual. Here the core is composed (a durable
supervisor, or a `RemoteSupervisor` on a socket) and handed to `tui.app.LoopvisorApp`,
which only ever sees a `SupervisorHandle`.
"""

from __future__ import annotations

import functools
import signal
from pathlib import Path
from typing import Any

import anyio

from supervisor import events as ev
from supervisor.alerts import Alert
from supervisor.control.client import RemoteSupervisor
from supervisor.durable import durable_supervisor
from supervisor.headless import HeadlessPrinter
from supervisor.runtime import EXIT_INTERRUPTED
from supervisor.spec import Config
from tui.app import LoopvisorApp


def run_tui(config: Config, *, resume: bool = False) -> int:
    """`loopvisor [CONFIG]` on a terminal: the console over an in-process supervisor.

    The run is durable exactly like the headless one (`durable_supervisor`: state-dir
    lock, journal, `--resume`). SIGTERM or SIGHUP (the SSH connection dropped) end it
    as an interruption: loops are stopped, their processes killed, exit code 130.
    """
    return anyio.run(_run_tui, config, resume)


async def _run_tui(config: Config, resume: bool) -> int:
    async with durable_supervisor(config, resume=resume, exit_when_idle=False) as supervisor:

        async def run_supervisor() -> ev.RunFinished:
            try:
                return await supervisor.run()
            finally:
                with anyio.CancelScope(shield=True):
                    await supervisor.aclose()

        app = LoopvisorApp(
            supervisor,
            title=f"loopvisor · {config.path.name}",
            run_supervisor=run_supervisor,
            ring_for=functools.partial(rings, config),
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(_exit_on_signal, app)
            await app.run_async()
            tg.cancel_scope.cancel()
        if app.summary is not None:  # what the run did stays on the terminal
            HeadlessPrinter(transcripts=False).print_event(app.summary)
        return supervisor.exit_code()


def rings(config: Config, alert: Alert) -> bool:
    """`[notify] bell` of the alert's loop, for the events that table subscribes to."""
    spec = config.notify_for(alert.loop)
    return spec.bell and alert.subscribed_as in spec.events


async def _exit_on_signal(app: LoopvisorApp) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        async for _ in signals:
            app.exit(EXIT_INTERRUPTED)
            return


async def attach(sock: Path, state_dir: Path | None) -> None:
    """`loopvisor attach`: the console over a served supervisor's socket (`NotServing`
    when nobody answers there)."""
    async with RemoteSupervisor(sock, state_dir=state_dir) as remote:
        app = LoopvisorApp(remote, **attach_options(remote))
        await app.run_async()


def attach_options(remote: RemoteSupervisor) -> dict[str, Any]:
    """Keyword arguments for `tui.app.LoopvisorApp` over a remote supervisor."""
    hello = remote.hello
    return {  # history comes through the handle too: the app needs no state dir
        "title": f"loopvisor · {Path(str(hello.get('config', '?'))).name} (attached)",
        "run_supervisor": None,
        "detach_mode": True,
        # the server can die and come back (`serve --resume`): reattach on the same socket
        "reconnect": lambda: RemoteSupervisor(remote.socket_path, state_dir=remote.state_dir),
    }
