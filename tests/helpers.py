"""Shared helpers for the core's tests: real configs in tmp_path, the real CLI in a
subprocess, and a supervisor run that records every event it published.

Configs are written as TOML text and loaded through `supervisor.config.load.load_config`,
so every test exercises the same path a user's loops.toml takes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import psutil
from anyio.streams.memory import MemoryObjectReceiveStream

from supervisor import events as ev
from supervisor.agents.base import Agent, AgentEvent, AgentRequest, BudgetExhausted
from supervisor.config.load import load_config
from supervisor.runtime import Supervisor
from supervisor.spec import Config

TESTS = Path(__file__).resolve().parent
"""tests/: the support modules, data/ and one folder of tests per area."""
REPO = TESTS.parent
PY = sys.executable

E = TypeVar("E", bound=ev.Event)


# -- TOML text -------------------------------------------------------------------
def toml_value(value: object) -> str:
    """A Python value as TOML (strings via JSON escapes, which TOML shares)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        inner = ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def table(header: str, **keys: object) -> str:
    """`[header]` with one `key = value` line per keyword (None values are left out)."""
    lines = [f"[{header}]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in keys.items() if v is not None]
    return "\n".join(lines) + "\n"


def sim_agent(name: str, **keys: object) -> str:
    """An `[agents.NAME]` table of kind sim; fast by default (rate 5000 tokens/s)."""
    keys.setdefault("rate", 5000)
    keys.setdefault("reply_tokens", 20)
    return table(f"agents.{name}", kind="sim", **keys)


def command_agent(name: str, script: str, *args: str, **keys: object) -> str:
    """An `[agents.NAME]` table running `python -c SCRIPT ARGS...` (no shell anywhere)."""
    return table(f"agents.{name}", kind="command", command=[PY, "-c", script, *args], **keys)


def loop(name: str, agent: str, **keys: object) -> str:
    """A `[[loop]]` table; `prompt` defaults to a short one naming the iteration."""
    keys.setdefault("prompt", "Do the task. Iteration $iteration of $max_iterations.")
    lines = ["[[loop]]", f"name = {toml_value(name)}", f"agent = {toml_value(agent)}"]
    lines += [f"{k} = {toml_value(v)}" for k, v in keys.items() if v is not None]
    return "\n".join(lines) + "\n"


def supervisor_table(max_concurrent: int = 4, **budget: object) -> str:
    text = table("supervisor", max_concurrent=max_concurrent)
    if budget:
        text += table("supervisor.budget", **budget)
    return text


def write_config(tmp_path: Path, *parts: str, name: str = "loops.toml") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def load(tmp_path: Path, *parts: str) -> Config:
    """Write the TOML parts into tmp_path/loops.toml and load it the way the CLI does."""
    return load_config(write_config(tmp_path, *parts), state_dir=tmp_path / ".state")


# -- one agent turn, without a loop ------------------------------------------------
@asynccontextmanager
async def agent_events(
    agent: Agent, request: AgentRequest
) -> AsyncIterator[MemoryObjectReceiveStream[AgentEvent]]:
    """One turn of `agent`, run as `supervisor.turn` runs it: the agent a producer task
    writing to a stream whose other end the block reads. Leaving the block cancels the
    agent, then closes the stream; the agent's `BudgetExhausted` (its budget refused a
    reservation) is raised here, after the events it sent before. The stream is
    unbuffered, so a block that charges usage has it charged before the agent's next
    reservation (the turn's buffered stream gets that from `LedgerTurnBudget(settle=)`)."""
    send, receive = anyio.create_memory_object_stream[AgentEvent](0)
    refused: list[BudgetExhausted] = []

    async def produce() -> None:
        with send:
            try:
                await agent.run(request, send)
            except BudgetExhausted as exc:
                refused.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        try:
            yield receive
        finally:
            tg.cancel_scope.cancel()
            receive.close()
    if refused:
        raise refused[0]


async def agent_turn(agent: Agent, request: AgentRequest) -> list[AgentEvent]:
    """Every event of one turn of `agent`."""
    async with agent_events(agent, request) as events:
        return [event async for event in events]


# -- running a Supervisor in-process ------------------------------------------------
@dataclass
class Recorded:
    """Every event a run published (lossless: recorded by a bus sink), and its summary."""

    supervisor: Supervisor
    events: list[ev.Event] = field(default_factory=list)
    summary: ev.RunFinished | None = None

    def of(self, cls: type[E], loop: str | None = None) -> list[E]:
        return [
            e
            for e in self.events
            if isinstance(e, cls) and (loop is None or getattr(e, "loop", None) == loop)
        ]

    def states(self, loop: str) -> list[str]:
        return [e.state for e in self.of(ev.LoopStateChanged, loop)]

    def result(self, loop: str) -> ev.LoopResult:
        assert self.summary is not None
        return next(r for r in self.summary.loops if r.name == loop)


async def run_recorded(
    config: Config,
    *,
    exit_when_idle: bool = True,
    timeout: float = 20.0,
    during: Callable[[Recorded], Awaitable[None]] | None = None,
) -> Recorded:
    """Run a Supervisor to its end, recording events; `during` runs beside it.

    With `exit_when_idle=False` (serve mode) the run never ends by itself: it is
    cancelled once `during` has returned and every loop has ended.
    """
    sup = Supervisor(config, exit_when_idle=exit_when_idle)
    rec = Recorded(sup)
    sup.add_sink(rec.events.append)
    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:

            async def main() -> None:
                try:
                    rec.summary = await sup.run()
                finally:
                    tg.cancel_scope.cancel()

            async def side() -> None:
                assert during is not None
                await during(rec)
                if not exit_when_idle:  # a serve-style run never ends by itself
                    await wait_for(lambda: all(r.finished for r in sup.runners.values()))
                    tg.cancel_scope.cancel()

            tg.start_soon(main)
            if during is not None:
                tg.start_soon(side)
    if rec.summary is None:
        rec.summary = next((e for e in rec.events if isinstance(e, ev.RunFinished)), None)
    await sup.aclose()
    return rec


async def wait_for(
    predicate: Callable[[], object], *, timeout: float = 10.0, interval: float = 0.01
) -> None:
    """Poll until `predicate()` is truthy (fails the test after `timeout`)."""
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 (polls state owned by the core)
            await anyio.sleep(interval)


async def wait_event(
    rec: Recorded,
    cls: type[E],
    *,
    loop: str | None = None,
    where: Callable[[E], bool] = lambda e: True,
    timeout: float = 10.0,
) -> E:
    """Wait until an event of `cls` (matching `where`) has been published; return it."""
    found: list[E] = []

    def seen() -> bool:
        found[:] = [e for e in rec.of(cls, loop) if where(e)]
        return bool(found)

    await wait_for(seen, timeout=timeout)
    return found[0]


# -- the CLI as a real subprocess -------------------------------------------------
def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    env.pop("FORCE_COLOR", None)
    return env


def run_cli(
    *args: str | Path, cwd: Path, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """`python -m supervisor ARGS` in `cwd`, stdin/stdout not a terminal, with a timeout."""
    return subprocess.run(
        [PY, "-m", "supervisor", *map(str, args)],
        cwd=cwd,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


# -- processes ---------------------------------------------------------------------
GRANDCHILD_SCRIPT = (
    "import os, subprocess, sys, time\n"
    "child = subprocess.Popen(['sleep', '30'])\n"
    "open('pids.txt', 'w').write(f'{os.getpid()} {child.pid}')\n"
    "print('started', flush=True)\n"
    "time.sleep(30)\n"
)
"""A command agent that starts a grandchild `sleep 30`, writes both pids to pids.txt
in its cwd, says "started" and sleeps: for tests that something kills the group."""


def alive(pids: Iterable[int]) -> list[int]:
    """The pids that still run (zombies count as gone: they hold no resources)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_gone(pids: Iterable[int], timeout: float = 5.0) -> list[int]:
    """Wait up to `timeout` for every pid to exit; return those still alive."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while (left := alive(pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def read_pids(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(x) for x in path.read_text().split()]
