"""Support for the TUI tests (no tests here): sim configs, the real app over a real
Supervisor under Pilot, and a fixed-snapshot handle for the snapshot tests only."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from helpers import PY, load, loop, sim_agent, supervisor_table
from rich.console import Console
from textual.pilot import Pilot

from supervisor import events as ev
from supervisor.api import (
    BudgetSnapshot,
    ControlError,
    IterationDetail,
    IterationSummary,
    LoopDiff,
    LoopSnapshot,
    RunSnapshot,
    StepIn,
)
from supervisor.lines import LineKind, TranscriptLine
from supervisor.runtime import Supervisor
from supervisor.spec import Config, Limits
from tui.app import LoopvisorApp

FAILING_CHECK = [PY, "-c", "import sys; print('FAIL: test_parse (expected 3, got 2)'); sys.exit(1)"]


def endless_loop(name: str, agent: str = "steady", **keys: object) -> str:
    """A loop that never ends by itself: the done marker is never said."""
    keys.setdefault("max_iterations", 100_000)
    keys.setdefault("done_marker", "NEVER-SAID")
    keys.setdefault("on_stuck", "continue")
    return loop(name, agent, **keys)


def sim_config(tmp_path: Path, *loops: str, max_concurrent: int = 4, **agents: str) -> Config:
    """Sim agents `steady` (fast, short replies) and `stubborn` (same answer forever)."""
    parts = [
        supervisor_table(max_concurrent),
        sim_agent("steady", rate=100, reply_tokens=10, converge_after=1_000_000),
        sim_agent("stubborn", rate=100, reply_tokens=10, behavior="stuck"),
        *agents.values(),
        *loops,
    ]
    return load(tmp_path, *parts)


@dataclass
class TuiRun:
    """The real app over a real Supervisor, with every event it published (lossless)."""

    app: LoopvisorApp
    pilot: Pilot[int]
    supervisor: Supervisor
    events: list[ev.Event] = field(default_factory=list)

    def of(self, cls: type[Any], loop: str | None = None) -> list[Any]:
        return [
            e
            for e in self.events
            if isinstance(e, cls) and (loop is None or getattr(e, "loop", None) == loop)
        ]

    def state(self, loop: str) -> str:
        return self.supervisor.runners[loop].state

    async def until(
        self, predicate: Callable[[], object], timeout: float = 15.0, what: str = ""
    ) -> None:
        """Let the app run until `predicate()` holds (fails the test after `timeout`)."""
        with anyio.fail_after(timeout):
            while not predicate():
                await self.pilot.pause(0.02)

    async def focus(self, loop: str) -> None:
        """Put the table cursor on `loop` with the keyboard (home, then down)."""
        main = self.app.main
        assert main is not None
        await self.until(lambda: loop in main.table.order)
        main.table.focus()
        while main.table.focused_loop != loop:
            await self.pilot.press("down")


@asynccontextmanager
async def tui(config: Config, size: tuple[int, int] = (80, 24)) -> AsyncIterator[TuiRun]:
    """`loopvisor` in-process: the supervisor runs in the app's worker, as `run_tui` does."""
    sup = Supervisor(config, exit_when_idle=False)
    app = LoopvisorApp(
        sup,
        title="test",
        run_supervisor=sup.run,
    )
    run: TuiRun | None = None
    async with app.run_test(size=size) as pilot:
        run = TuiRun(app, pilot, sup)
        sup.add_sink(run.events.append)
        await run.until(lambda: app.snapshot is not None)
        yield run
        if app.is_running and not app.run_done:
            await sup.shutdown()
            await run.until(lambda: app.run_done)
    await sup.aclose()


def screen_text(app: LoopvisorApp) -> str:
    """What the terminal shows now, as plain text (the screen and any modal over it)."""
    width, height = app.size
    console = Console(
        width=width, height=height, file=io.StringIO(), record=True, legacy_windows=False
    )
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text(styles=False)


# -- a fixed handle (snapshot tests only) ------------------------------------------
def loop_snapshot(name: str, state: str, **kw: Any) -> LoopSnapshot:
    values: dict[str, Any] = {
        "name": name,
        "agent": "sim",
        "agent_kind": "sim",
        "state": state,
        "reason": "",
        "iteration": 2,
        "max_iterations": 6,
        "tokens": 1_234,
        "usd": 0.0037,
        "cpu_s": 1.5,
        "limits": Limits(tokens=8_000, usd=0.1),
        "retries_used": 0,
        "retries": 3,
        "started_at": 1_700_000_000.0,
        "elapsed_s": 75.0,
        "last_check": None,
        "last_check_passed": None,
        "attention": state in ("paused", "stuck"),
        "evidence": "",
        "session_id": None,
        "prompt": "Fix $loop (iteration $iteration of $max_iterations).\n$check_output",
        "wait_seconds": None,
        "next_run": None,
        "transcript_tail": (),
    }
    values.update(kw)
    return LoopSnapshot(**values)


K = LineKind
TRANSCRIPT = tuple(
    TranscriptLine(kind, text)
    for kind, text in (
        (K.ITERATION, "━━ iteration 1 ━━"),
        (K.TEXT, "Looking at the last check output, the parser misses a branch."),
        (K.TOOL, '⚙ write_file({"path": "duration.py"})'),
        (K.RESULT, "  ↳ wrote 96 bytes"),
        (K.CHECK, "▶ check unittest: python3 -m unittest -q"),
        (K.CHECK_FAIL, "✘ check unittest: exit 1 (expected 0); 1 failed, 2 passed (0.8s)"),
        (
            K.ITERATION_END,
            "── iteration 1 continue: exit 1 (expected 0); 1 failed, 2 passed"
            " [304 tok, $0.0009, 1.2s]",
        ),
        (K.ITERATION, "━━ iteration 2 ━━"),
        (K.OPERATOR, "» operator inject: the fixture lives in tests/conftest.py"),
        (K.TEXT, "The failure points at the boundary case; I will update the helper."),
        (K.STDERR, "[stderr] warning: deprecated call"),
        (
            K.STUCK,
            "⚠ stuck (same_failure): same check failure 3× — test_duration.test_compound → pause",
        ),
        (K.STATE, "── stuck: same_failure: same check failure 3× — test_duration.test_compound"),
    )
)


def demo_snapshot() -> RunSnapshot:
    """Five loops in every kind of state, frozen: nothing in it depends on the clock."""
    failing = "unittest: exit 1 (expected 0); 1 failed, 2 passed"
    loops = (
        loop_snapshot(
            "fizzbuzz", "running", reason="agent turn 3/6", iteration=3,
            last_check=failing, last_check_passed=False, transcript_tail=TRANSCRIPT[:7],
        ),
        loop_snapshot(
            "parser", "stuck", iteration=3, tokens=7_100,
            reason="same_failure: same check failure 3× — test_duration.test_compound",
            evidence="same_failure: same check failure 3× — test_duration.test_compound",
            last_check=failing, last_check_passed=False, transcript_tail=TRANSCRIPT,
        ),
        loop_snapshot(
            "slugify", "succeeded", reason="the check passed in iteration 2",
            last_check="1/1 passed", last_check_passed=True, elapsed_s=12.0,
        ),
        loop_snapshot(
            "release-notes", "waiting", reason="rate-limited", wait_seconds=12.0,
            iteration=1, max_iterations=10, limits=Limits(tokens=2_000), tokens=1_700,
        ),
        loop_snapshot(
            "greeter", "paused", reason="paused by the operator", iteration=1,
            max_iterations=4, tokens=0, usd=0.0, limits=Limits(), elapsed_s=3_725.0,
        ),
    )  # fmt: skip
    budget = BudgetSnapshot(
        limits=Limits(tokens=60_000, usd=1.0, wall=300.0, cpu=600.0),
        tokens=11_734,
        usd=0.0352,
        cpu_s=7.5,
        wall_s=94.0,
        tokens_reserved=0,
        usd_reserved=0.0,
        slots_in_use=2,
        slots_total=4,
    )
    return RunSnapshot(
        run_id="0123456789ab",
        config_path="loops.toml",
        started_at=1_700_000_000.0,
        finished=False,
        loops=loops,
        budget=budget,
    )


class FixedHandle:
    """A `SupervisorHandle` that shows one fixed snapshot and records control calls."""

    def __init__(
        self,
        snapshot: RunSnapshot,
        step_in: StepIn | None = None,
        events: tuple[ev.Event, ...] = (),
        diffs: dict[tuple[str, int | None], LoopDiff] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._step_in = step_in
        self._events = events
        self._diffs = diffs or {}
        self.calls: list[tuple[str, Any]] = []

    async def snapshot(self, *, tail: int = 200) -> RunSnapshot:
        return self._snapshot

    def subscribe(
        self, max_buffer: int = 1000
    ) -> AbstractAsyncContextManager[AsyncIterator[ev.Event]]:
        @asynccontextmanager
        async def events() -> AsyncIterator[AsyncIterator[ev.Event]]:
            async def never() -> AsyncIterator[ev.Event]:
                for event in self._events:
                    yield event
                await anyio.sleep_forever()

            yield never()

        return events()

    @asynccontextmanager
    async def subscribe_with_snapshot(
        self, max_buffer: int = 1000
    ) -> AsyncIterator[tuple[RunSnapshot, AsyncIterator[ev.Event]]]:
        async with self.subscribe(max_buffer) as events:
            yield self._snapshot, events

    async def iterations(self, loop: str, *, limit: int = 1000) -> list[IterationSummary]:
        raise ControlError("no journal here")

    async def iteration(self, loop: str, iteration: int) -> IterationDetail:
        raise ControlError("no journal here")

    async def diff(self, loop: str, *, iteration: int | None = None) -> LoopDiff:
        try:
            return self._diffs[(loop, iteration)]
        except KeyError:
            raise ControlError(f"loop {loop!r} has no git worktree") from None

    async def _call(self, op: str, *args: Any) -> None:
        self.calls.append((op, args))

    async def pause(self, loop: str | None = None) -> None:
        await self._call("pause", loop)

    async def resume(self, loop: str | None = None) -> None:
        await self._call("resume", loop)

    async def stop(self, loop: str | None = None) -> None:
        await self._call("stop", loop)

    async def restart(self, loop: str) -> None:
        await self._call("restart", loop)

    async def inject(self, loop: str, text: str) -> None:
        await self._call("inject", loop, text)

    async def edit(
        self,
        loop: str,
        *,
        prompt: str | None = None,
        max_iterations: int | None = None,
        limits: Limits | None = None,
    ) -> None:
        await self._call("edit", loop, prompt, max_iterations, limits)

    async def budget(self, limits: Limits | None) -> None:
        await self._call("budget", limits)

    async def step_in(self, loop: str) -> StepIn:
        await self._call("step_in", loop)
        if self._step_in is None:
            raise ControlError("no step-in here")
        return self._step_in

    async def chat(self, loop: str, text: str) -> str:
        await self._call("chat", loop, text)
        return "ok"

    async def hand_back(self, loop: str) -> None:
        await self._call("hand_back", loop)

    async def land(
        self,
        loop: str,
        *,
        squash: bool = False,
        into: str | None = None,
        push: str | None = None,
        pr: bool = False,
    ) -> str:
        await self._call("land", loop, squash, into, push, pr)
        return f"{loop}: landed"

    async def fork(
        self, loop: str, *, iteration: int, name: str | None = None, prompt: str | None = None
    ) -> str:
        await self._call("fork", loop, iteration, name, prompt)
        return f"{name}: forked from {loop}@{iteration}"

    async def add(
        self,
        name: str,
        *,
        like: str,
        prompt: str | None = None,
        max_iterations: int | None = None,
        limits: Limits | None = None,
    ) -> str:
        await self._call("add", name, like, prompt, max_iterations, limits)
        return f"{name}: started like {like}"

    async def transcript(
        self, loop: str, *, before: int | None = None, limit: int = 500
    ) -> list[TranscriptLine]:
        return []

    async def shutdown(self) -> None:
        await self._call("shutdown")


def fixed_app(snapshot: RunSnapshot | None = None, **kw: Any) -> tuple[LoopvisorApp, FixedHandle]:
    handle = FixedHandle(
        snapshot or demo_snapshot(),
        kw.pop("step_in", None),
        kw.pop("events", ()),
        kw.pop("diffs", None),
    )
    app = LoopvisorApp(handle, title="loopvisor · loops.toml", clock=lambda: 1_700_000_100.0, **kw)
    return app, handle
