"""LoopvisorApp: the operator console, for a local supervisor or an attached one.

The app only talks to a `SupervisorHandle` (snapshot, subscribe, control operations),
so the same screens serve `loopvisor` (local: the supervisor's `run()` is given as
`run_supervisor` and runs in a worker on Textual's own asyncio loop, where anyio's
asyncio backend works unchanged: events reach widgets without a thread hop) and
`loopvisor attach` (a remote handle: the app only observes and controls; given
`reconnect`, it says DISCONNECTED when the server dies and reattaches when one answers).

Data flow: one worker subscribes to events and keeps per-loop transcript lines
(`model.Transcripts`); a 15 Hz timer lets screens pull new lines; a 4 Hz poll of
`handle.snapshot()` (sooner after each control operation) drives the table and
gauges in one batch update. Nothing is updated per token.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar

import anyio
from textual.app import App
from textual.binding import BindingType
from textual.screen import Screen

from supervisor import events as ev
from supervisor.alerts import Alert, AlertTracker
from supervisor.api import ControlError, RunSnapshot, SupervisorHandle
from tui.actions import OperatorActions
from tui.commands import LoopCommands
from tui.keys import APP_BINDINGS
from tui.live import Live
from tui.model import BurnWindow, IterationLog, Transcripts, wait_deadline
from tui.screens.confirm import confirm
from tui.screens.main import MainScreen

RUNNING_STATES = frozenset({"pending", "running", "checking", "waiting", "pausing", "scheduled"})
NEAR_EXHAUSTION = 0.8
EVENT_BUFFER = 20_000
"""Events the app may fall behind by before it resyncs from a snapshot."""
RETRY_FIRST = 0.25
RETRY_MAX = 5.0
"""Reattaching to a server that went away: the first retry, and the backoff's cap (s)."""
Reconnect = Callable[[], AbstractAsyncContextManager[SupervisorHandle]]


class LoopvisorApp(OperatorActions):
    TITLE = "loopvisor"
    COMMANDS = App.COMMANDS | {LoopCommands}
    MODES: ClassVar[dict[str, str | Callable[[], Screen[Any]]]] = {"main": MainScreen}
    DEFAULT_MODE: ClassVar[str] = "main"  # (a mode, not get_default_screen: loads CSS_PATH)
    BINDINGS: ClassVar[list[BindingType]] = list(APP_BINDINGS)  # tui/keys.py

    def __init__(
        self,
        handle: SupervisorHandle,
        *,
        title: str,
        run_supervisor: Callable[[], Awaitable[object]] | None = None,
        detach_mode: bool = False,
        clock: Callable[[], float] = time.time,
        snapshot_interval: float = 0.25,
        flush_interval: float = 1 / 15,
        reconnect: Reconnect | None = None,
        ring_for: Callable[[Alert], bool] = lambda _alert: True,
    ) -> None:
        super().__init__()
        self.ring_for = ring_for
        """Whether an alert rings the terminal bell (`[notify] bell` of its loop)."""
        self._alerts = AlertTracker()
        self.handle = handle
        self.title = title
        self.detach_mode = detach_mode
        self.clock = clock
        self.snapshot_interval = snapshot_interval
        self.flush_interval = flush_interval
        self.snapshot: RunSnapshot | None = None
        self.transcripts = Transcripts()
        self.iterations = IterationLog()
        self.burn = BurnWindow()
        self.wait_deadlines: dict[str, float] = {}
        self.summary: ev.RunFinished | None = None
        self.run_done = False
        self._run_supervisor = run_supervisor
        self._reconnect = reconnect
        """Attached: opens a new handle on the same socket when the server went away."""
        self.disconnected = ""
        """Why the handle is gone, while it is (attached, between server lives)."""
        self._quitting = False
        self._warned: set[str] = set()
        self._poke = anyio.Event()

    def on_mount(self) -> None:
        self.run_worker(self._feed(), name="events", group="feed")
        self.run_worker(self._poll(), name="snapshots", group="feed")
        if self._run_supervisor is not None:
            self.run_worker(self._run(), name="supervisor", group="supervisor")
        self.set_interval(self.flush_interval, self._tick, name="flush")

    # -- data -------------------------------------------------------------------
    async def _feed(self) -> None:
        why = await self._follow(self.handle)
        if self._reconnect is not None:
            await self._reattach(why)
        elif why:
            self.notify(f"event stream ended: {why}", severity="error", timeout=30)
        elif self._run_supervisor is None:
            self.notify("the supervisor's event stream ended", severity="warning", timeout=30)

    async def _follow(self, handle: SupervisorHandle) -> str:
        """Show `handle`'s run until its event stream ends; returns why ("" if it just
        ended). The snapshot and the events start at one instant, so the transcripts
        seeded from the one continue exactly with the other; when this console fell
        behind (events dropped), it starts over the same way."""
        try:
            while True:
                async with handle.subscribe_with_snapshot(EVENT_BUFFER) as (snapshot, events):
                    self._apply_snapshot(snapshot, seed=True)
                    fell_behind = False
                    async for event in events:
                        if isinstance(event, ev.EventsDropped):
                            fell_behind = True
                            break
                        self._on_event(event)
                if not fell_behind:
                    return ""
        except Exception as exc:  # a remote handle can go away; say so, keep the screen
            return str(exc)

    async def _reattach(self, why: str) -> None:
        """The server went away: say so on the screen (the last snapshot stays, marked
        stale), retry with backoff, and follow the next server that answers on the
        socket (`serve --resume`) as if freshly attached."""
        reconnect = self._reconnect
        assert reconnect is not None
        delay = RETRY_FIRST
        attempts = 0
        while True:
            reason = why or "connection lost"
            self._set_disconnected(f"DISCONNECTED: {reason} · retry {attempts + 1}")
            await anyio.sleep(delay)
            attempts += 1
            try:
                async with reconnect() as handle:
                    self.handle = handle
                    self._set_disconnected("")
                    self.notify("reattached to the supervisor", timeout=5)
                    delay, attempts = RETRY_FIRST, 0
                    why = await self._follow(handle)
            except ControlError as exc:  # NotServing: nobody (or a stale socket) there
                why = str(exc)
                delay = min(RETRY_MAX, delay * 2)

    def _set_disconnected(self, text: str) -> None:
        if text == self.disconnected:
            return
        self.disconnected = text
        if self.snapshot is not None:
            self._show(self.snapshot)
        self.poke()

    async def _poll(self) -> None:
        """Snapshots at `snapshot_interval`, backing off when one costs a lot (1,000 loops):
        the wait is at least 8x what the last snapshot and table update took, so polling
        never takes more than ~1/9 of the event loop from key handling."""
        failed = False
        while True:
            started = time.perf_counter()
            try:  # no transcript tails: the transcripts follow the events
                snapshot = await self.handle.snapshot(tail=0)
            except Exception as exc:
                if not failed and self._reconnect is None:  # else: the banner says it
                    self.notify(f"cannot read the supervisor: {exc}", severity="error")
                failed = True
            else:
                failed = False
                self._apply_snapshot(snapshot)
            cost = time.perf_counter() - started
            with anyio.move_on_after(max(self.snapshot_interval, min(2.0, 8 * cost))):
                await self._poke.wait()
            self._poke = anyio.Event()

    def poke(self) -> None:
        """Refresh the snapshot now (after a control operation)."""
        self._poke.set()

    def _apply_snapshot(self, snapshot: RunSnapshot, *, seed: bool = False) -> None:
        self.snapshot = snapshot
        if seed:
            for loop in snapshot.loops:
                self.transcripts.seed(
                    loop.name,
                    loop.transcript_tail,
                    force=True,
                    streaming=loop.transcript_streaming,
                )
        budget = snapshot.budget
        self.burn.add(self.clock(), budget.tokens, budget.usd, budget.cpu_s)
        self._check_budget(snapshot)
        self._show(snapshot)

    def _show(self, snapshot: RunSnapshot) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, Live) and screen.is_mounted:
                screen.live_snapshot(snapshot)

    def _tick(self) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, Live) and screen.is_mounted:
                screen.live_tick()

    def _on_event(self, event: ev.Event) -> None:
        self.transcripts.apply(event)
        self.iterations.apply(event)
        alert = self._alerts.observe(event)  # what a notification would say: the bell
        if alert is not None and self.ring_for(alert):
            self.bell()
        if isinstance(event, ev.LoopStateChanged):
            deadline = wait_deadline(event)
            if deadline is None:
                self.wait_deadlines.pop(event.loop, None)
            else:
                self.wait_deadlines[event.loop] = deadline
            if event.state in ("stuck", "paused", "failed"):
                self.poke()
        elif isinstance(event, ev.StuckDetected):
            title = "cost spike" if event.detector == "cost_spike" else "stuck"
            self.notify(
                f"{event.loop}: {event.evidence} → {event.action}",
                title=title,
                severity="warning",
                timeout=10,
            )
        elif isinstance(event, ev.BudgetWarning):
            self._budget_warning(event)
        elif isinstance(event, ev.RunFinished):
            self.summary = event

    def _budget_warning(self, event: ev.BudgetWarning) -> None:
        """Global warnings and a loop's overshoot become notifications; a loop reaching
        its own thresholds is a line in its transcript (64 loops would bury the screen)."""
        overshoot = event.used > event.limit
        if event.scope != "global" and not overshoot:
            return
        self._warned.add(event.dimension.lower())
        used_up = event.used >= event.limit
        self.notify(
            event.message,
            title="budget used up" if used_up else "budget nearly used up",
            severity="error" if used_up else "warning",
            timeout=15,
        )

    def _check_budget(self, snapshot: RunSnapshot) -> None:
        """Near-exhaustion from the snapshot too: an attached console may have missed the
        core's warning event, and wall time has none. Once per dimension."""
        b = snapshot.budget
        lim = b.limits
        for name, used, limit in (
            ("tokens", b.tokens, lim.tokens),
            ("usd", b.usd, lim.usd),
            ("wall", b.wall_s, lim.wall),
            ("cpu", b.cpu_s, lim.cpu),
        ):
            share = used / limit if limit else 0.0
            if share >= NEAR_EXHAUSTION and name not in self._warned:
                self._warned.add(name)
                label = {"usd": "USD", "cpu": "CPU"}.get(name, name)
                self.notify(
                    f"global {label} budget at {share:.0%}",
                    title="budget nearly used up",
                    severity="warning",
                    timeout=10,
                )
            elif share < NEAR_EXHAUSTION:
                self._warned.discard(name)

    # -- the local supervisor ------------------------------------------------------
    async def _run(self) -> None:
        assert self._run_supervisor is not None
        try:
            result = await self._run_supervisor()
        except Exception as exc:
            self.run_done = True
            self.notify(f"the supervisor failed: {exc!r}", severity="error", timeout=60)
            return
        self.run_done = True
        if isinstance(result, ev.RunFinished):
            self.summary = result
        if self._quitting:
            self.exit(self.summary.exit_code if self.summary else 0)
            return
        self.poke()
        if self.summary is not None:
            why = f": {self.summary.reason}" if self.summary.reason else ""
            self.notify(
                f"exit code {self.summary.exit_code}{why}; q quits",
                title="run finished",
                timeout=30,
            )

    # -- leaving ------------------------------------------------------------------
    async def action_quit(self) -> None:
        self.request_quit()

    def action_detach(self) -> None:
        if self.detach_mode:
            self.exit(0)

    def request_quit(self) -> None:
        """`q`: detach (attach mode), or stop the run and quit, asking if loops run."""
        if self.detach_mode:
            self.exit(0)
            return
        if self.run_done:
            self.exit(self.summary.exit_code if self.summary else 0)
            return
        snapshot = self.snapshot
        loops = snapshot.loops if snapshot else ()
        running = [loop.name for loop in loops if loop.state in RUNNING_STATES]
        if not running:
            self._stop_and_quit()
            return

        names = ", ".join(running[:5]) + (" …" if len(running) > 5 else "")
        confirm(
            self,
            f"{len(running)} loop(s) still running",
            f"{names}\nQuitting stops them (their processes are killed).",
            "Stop and quit",
            self._stop_and_quit,
        )

    def _stop_and_quit(self) -> None:
        self._quitting = True
        if self._run_supervisor is None:
            self.control("shut down", self.handle.shutdown)
            self.exit(0)
            return
        self.control("shut down", self.handle.shutdown)
