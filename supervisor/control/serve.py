"""`loopvisor serve`: a long-lived supervisor with no UI, a journal and a control socket.

Foreground by default (systemd, containers: logs go to stdout/stderr); `--detach`
double-forks into a new session with stdio on `STATE_DIR/serve.log` and returns
once the socket answers. Either way `STATE_DIR/serve.pid` holds the PID and
`STATE_DIR/control.sock` the socket (see `control.server` for its safety rules). The
supervisor comes from `durable.durable_supervisor`, as for `run` and the TUI: the
state-dir lock, the journal, and `--resume` after a crash work the same way.
When every loop has ended (or the global wall budget ran out), serve keeps
answering until it is shut down, so that `ctl status` and `attach` show the end.

Signals: SIGTERM / SIGINT shut down cleanly (every loop stopped, its process group
killed, the summary logged, the journal flushed, socket and PID file removed);
SIGHUP reloads loops.toml (see reload.py: what changed in the file is applied,
operator edits to keys it did not change stay).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from supervisor.config.load import ConfigError, load_config
from supervisor.control.protocol import SOCKET_NAME, RemoteError, unix_address
from supervisor.control.reload import reload_config
from supervisor.control.server import ControlServer, ControlSocketError
from supervisor.diskfull import DiskFull, is_disk_full, no_space_left
from supervisor.durable import NothingToResume, durable_supervisor
from supervisor.headless import HeadlessPrinter
from supervisor.interrupts import interrupt_proof, shutdown_signals
from supervisor.journal.statelock import StateLocked, lock_holder
from supervisor.journal.writer import JournalError
from supervisor.runtime import EXIT_DISK_FULL, EXIT_FAILED, EXIT_OK, EXIT_USAGE, Supervisor
from supervisor.spec import Config
from supervisor.statedir import StateDirError, ensure_state_dir, open_private, replace_private
from supervisor.textsafe import for_terminal
from supervisor.worktree import WorktreeError, prepare_worktrees

log = logging.getLogger("loopvisor.serve")

READY_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 20


@dataclass(frozen=True, slots=True)
class ServePaths:
    """Where a serving supervisor keeps its socket, PID file and log."""

    state_dir: Path

    @property
    def socket(self) -> Path:
        return self.state_dir / SOCKET_NAME

    @property
    def pid(self) -> Path:
        return self.state_dir / "serve.pid"

    @property
    def log(self) -> Path:
        return self.state_dir / "serve.log"


# -- the serving process -----------------------------------------------------------
class ServeSession:
    """One serving supervisor: control socket, signals, reload; `run()` until shutdown.

    The supervisor comes from `durable.durable_supervisor` (state-dir lock, journal,
    resume), like every other front-end's.
    """

    def __init__(
        self,
        sup: Supervisor,
        *,
        state_dir_override: Path | None = None,
        allowed_uid: int | None = None,
    ) -> None:
        self.sup = sup
        self.config = sup.config
        self.paths = ServePaths(self.config.supervisor.state_dir)
        self.state_dir_override = state_dir_override
        self.server = ControlServer(
            sup,
            self.paths.socket,
            allowed_uid=allowed_uid,
            info=self._info,
            reload=self.reload,
            shutdown=lambda: self.request_shutdown("shutdown requested over the control socket"),
        )
        self._shutdown = anyio.Event()
        self._reload_lock = anyio.Lock()

    def _info(self) -> dict[str, Any]:
        return {
            "run_id": self.sup.run_id,
            "config": str(self.config.path),
            "state_dir": str(self.paths.state_dir),
            "started_at": self.sup.started_at,
            "loops": list(self.sup.runners),
        }

    def request_shutdown(self, why: str) -> None:
        if self._shutdown.is_set():
            return
        log.info("shutting down: %s", why)
        _sd_notify("STOPPING=1")
        self._shutdown.set()
        # The normal end of the run: loops still going end `stopped` and the run records
        # what its loops did (not 130: a requested shutdown interrupts nothing).
        self.sup.shutdown_now(why)

    async def reload(self) -> dict[str, Any]:
        async with self._reload_lock:
            report = await reload_config(self.sup, self.config.path, self.state_dir_override)
        return report.to_dict()

    async def run(
        self, signals: AsyncIterator[int], ready: Callable[[], None] | None = None
    ) -> int:
        """Serve until shutdown; `signals` (from `interrupts.shutdown_signals`, held by
        the caller past the journal's close) stop it (SIGTERM, SIGINT) or reload (SIGHUP)."""
        try:
            async with anyio.create_task_group() as tg:
                printed = anyio.Event()
                await tg.start(self._print_events, printed)
                try:
                    await tg.start(self.server.serve)
                except (ControlSocketError, OSError) as exc:
                    log.error("cannot serve on %s: %s", self.paths.socket, exc)
                    tg.cancel_scope.cancel()
                    return EXIT_USAGE
                try:
                    _write_pid(self.paths.pid)
                except (StateDirError, OSError) as exc:
                    full = is_disk_full(exc)
                    log.error("%s", DiskFull(self.paths.state_dir) if full else exc)
                    tg.cancel_scope.cancel()
                    return EXIT_DISK_FULL if full else EXIT_USAGE
                tg.start_soon(self._signals, tg, signals)
                log.info(
                    "serving %s: %d loop(s), run %s%s, socket %s, pid %d",
                    self.config.path,
                    len(self.sup.runners),
                    self.sup.run_id,
                    " (resumed)" if self.sup.resumed else "",
                    self.paths.socket,
                    os.getpid(),
                )
                if ready is not None:
                    ready()
                _sd_notify("READY=1")
                if not self._shutdown.is_set():
                    await self.sup.run()
                if self.sup.exit_code() == EXIT_DISK_FULL:  # nothing can be journalled
                    self.request_shutdown(self.sup.end_reason)
                elif not self._shutdown.is_set():
                    log.info("the run ended on its own; still serving until shutdown")
                    await self._shutdown.wait()
                self.sup.bus.close()  # subscribers drain (summary included), then end
                with anyio.move_on_after(3):
                    await printed.wait()
                    await self.server.wait_subscribers_done()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.sup.aclose()
            _remove_pid(self.paths.pid)
        log.info("stopped")
        return EXIT_DISK_FULL if self.sup.exit_code() == EXIT_DISK_FULL else EXIT_OK

    async def _print_events(
        self, printed: anyio.Event, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        printer = HeadlessPrinter(json_lines=False, transcripts=False)
        async with self.sup.subscribe(max_buffer=10_000) as events:
            task_status.started()
            await printer.consume(events)
        printed.set()

    async def _signals(self, tg: anyio.abc.TaskGroup, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                tg.start_soon(self._reload_logged)
            else:
                self.request_shutdown(f"signal {signal.Signals(signum).name}")

    async def _reload_logged(self) -> None:
        log.info("SIGHUP: reloading %s", self.config.path)
        with contextlib.suppress(RemoteError):  # already published and logged
            await self.reload()


async def serve(
    config: Config,
    *,
    resume: bool = False,
    state_dir_override: Path | None = None,
    allowed_uid: int | None = None,
    ready: Callable[[], None] | None = None,
) -> int:
    """Serve `config` (journalled, resumable) until shutdown; returns the exit code."""
    with shutdown_signals() as signals:
        async with durable_supervisor(config, resume=resume, exit_when_idle=False) as sup:
            session = ServeSession(
                sup, state_dir_override=state_dir_override, allowed_uid=allowed_uid
            )
            return await session.run(signals, ready)


# -- files and systemd --------------------------------------------------------------
def _write_pid(path: Path) -> None:
    replace_private(path, f"{os.getpid()}\n")  # 0600, atomic, never through a link


def _remove_pid(path: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text(encoding="ascii").strip()) == os.getpid():
            path.unlink()


def _sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about readiness; a no-op elsewhere."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return
    if target.startswith("@"):
        target = "\0" + target[1:]
    with (
        contextlib.suppress(OSError),
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
    ):
        sock.sendto(message.encode(), target)


class _TerminalSafeFormatter(logging.Formatter):
    """Log lines with controls shown, not obeyed: serve.log is read with `cat` and
    `tail -f`, and a message may quote what an agent or a client sent."""

    def format(self, record: logging.LogRecord) -> str:
        return for_terminal(super().format(record))


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_TerminalSafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("loopvisor")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


# -- entry points ----------------------------------------------------------------
def serve_foreground(
    config_path: Path,
    state_dir: Path | None = None,
    *,
    resume: bool = False,
    ready: Callable[[], None] | None = None,
    allowed_uid: int | None = None,
) -> int:
    """Serve in this process until SIGTERM / `ctl shutdown`; returns the exit code."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the reload handler is installed
    setup_logging()
    try:
        config = load_config(config_path, state_dir=state_dir)
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    for warning in config.warnings:
        log.warning("%s", warning)
    paths = ServePaths(config.supervisor.state_dir)
    try:
        ensure_state_dir(paths.state_dir)
        for line in prepare_worktrees(config):  # before the run, as `run` does
            log.info("%s", line)
        main = functools.partial(
            serve,
            config,
            resume=resume,
            state_dir_override=state_dir,
            allowed_uid=allowed_uid,
            ready=ready,
        )
        # A Ctrl-C before the signal receiver is up, or in the last instructions of
        # the exit, is exit 130 without a traceback (interrupts.py).
        return interrupt_proof(functools.partial(anyio.run, main))
    except (
        StateLocked,
        StateDirError,
        NothingToResume,
        JournalError,
        ControlSocketError,
        WorktreeError,
        OSError,
    ) as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except DiskFull as exc:  # at the start, or the run's end could not be journalled
        log.error("%s", exc)
        return EXIT_DISK_FULL


def serve_detached(
    config_path: Path, state_dir: Path | None = None, *, resume: bool = False
) -> int:
    """Start `serve` in the background; 0 once its socket answers, else 1 with the log tail."""
    config = load_config(config_path, state_dir=state_dir)  # errors: exit 3 from the CLI
    paths = ServePaths(config.supervisor.state_dir)
    ensure_state_dir(paths.state_dir)  # StateDirError: exit 3 from the CLI
    if no_space_left(paths.state_dir):  # the daemon could not even log why it stopped
        print(DiskFull(paths.state_dir), file=sys.stderr)
        return EXIT_DISK_FULL
    holder = lock_holder(paths.state_dir)
    if holder is not None:
        print(
            for_terminal(f"another loopvisor (pid {holder}) is using {paths.state_dir}"),
            file=sys.stderr,
        )
        return EXIT_USAGE
    for line in prepare_worktrees(config):  # WorktreeError (a bad base...): exit 3 here
        print(for_terminal(line), file=sys.stderr)
    abs_config = config_path.resolve()
    abs_state = Path(os.path.abspath(state_dir)) if state_dir is not None else None
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked children
        os.close(read_fd)
        _daemon_child(abs_config, abs_state, paths, write_fd, resume)
    os.close(write_fd)
    os.waitpid(child, 0)  # the intermediate child exits at once
    status, pid = _wait_ready(read_fd, READY_TIMEOUT_S)
    os.close(read_fd)
    if status == "ready" and _answers(paths.socket):
        print(
            for_terminal(  # paths are text from loops.toml and directory names: shown
                f"loopvisor is serving {abs_config} in the background (pid {pid})\n"
                f"  socket: {paths.socket}\n  log:    {paths.log}\n"
                f"  attach: loopvisor attach --state-dir {paths.state_dir}\n"
                f"  stop:   loopvisor ctl shutdown --state-dir {paths.state_dir}"
            )
        )
        return EXIT_OK
    if status == "timeout" and pid:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    why = "did not become ready in time" if status == "timeout" else "exited during start-up"
    print(for_terminal(f"loopvisor serve {why}; last lines of {paths.log}:"), file=sys.stderr)
    print(for_terminal(_tail(paths.log, LOG_TAIL_LINES)), file=sys.stderr)
    return EXIT_FAILED


def _daemon_child(
    config_path: Path, state_dir: Path | None, paths: ServePaths, ready_fd: int, resume: bool
) -> None:  # pragma: no cover - runs in the forked children
    code = EXIT_FAILED
    try:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        os.write(ready_fd, f"pid {os.getpid()}\n".encode())
        _redirect_stdio(paths.log)

        def ready() -> None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)

        code = serve_foreground(config_path, state_dir, resume=resume, ready=ready)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _redirect_stdio(log_path: Path) -> None:  # pragma: no cover - forked child
    out = open_private(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.close(null)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115


def _wait_ready(fd: int, timeout: float) -> tuple[str, int | None]:
    """("ready" | "died" | "timeout", daemon pid) from the child's status pipe."""
    deadline = time.monotonic() + timeout
    data = b""
    pid: int | None = None
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            break
        chunk = os.read(fd, 256)
        if not chunk:
            return "died", pid
        data += chunk
        for line in data.decode("ascii", "replace").splitlines():
            if line.startswith("pid "):
                pid = int(line[4:])
            elif line == "ready":
                return "ready", pid
    return "timeout", pid


def _answers(path: Path, timeout: float = 5.0) -> bool:
    """True when a loopvisor hello arrives on the socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, unix_address(path) as a:
            sock.settimeout(timeout)
            sock.connect(a)
            return sock.recv(4096).startswith(b'{"v":')
    except OSError:
        return False


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
