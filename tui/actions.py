"""Every operator action on loops, shared by the keys, the screens and the palette.

`OperatorActions` is the app's half that turns an intent ("stop fizzbuzz") into a
confirmation if needed and one `SupervisorHandle` call in a worker; a refusal
(`ControlError`) becomes a notification, success a short one and a fresh snapshot.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from textual.app import App

from supervisor.api import ControlError, LoopSnapshot, RunSnapshot, SupervisorHandle
from supervisor.events import END_STATES
from tui import format as fmt
from tui.screens.confirm import confirm
from tui.screens.main import MainScreen
from tui.stepin import step_in


class OperatorActions(App[int]):
    handle: SupervisorHandle
    snapshot: RunSnapshot | None

    def poke(self) -> None:
        """Refresh the snapshot now (the app implements it)."""
        raise NotImplementedError

    # -- lookups ------------------------------------------------------------------
    def loop(self, name: str) -> LoopSnapshot | None:
        if self.snapshot is None:
            return None
        return next((loop for loop in self.snapshot.loops if loop.name == name), None)

    @property
    def main(self) -> MainScreen | None:
        return next((s for s in self.screen_stack if isinstance(s, MainScreen)), None)

    @property
    def focused_loop(self) -> str | None:
        main = self.main
        return main.focused_loop if main is not None else None

    def focus_loop(self, name: str) -> None:
        main = self.main
        if main is not None:
            main.focus_loop(name)

    # -- operator actions ----------------------------------------------------------
    def control(self, what: str, op: Callable[[], Awaitable[Any]]) -> None:
        """Run one control operation in a worker; a refusal becomes a notification."""

        async def run() -> None:
            try:
                await op()
            except ControlError as exc:
                self.notify(str(exc), title=f"{what}: refused", severity="error")
            else:
                self.notify(what, timeout=3)
            self.poke()

        self.run_worker(run(), group="control")

    def toggle_pause(self, name: str) -> None:
        """`p`: resume a paused or stuck loop, pause a live one; a loop that ended
        cannot pause (the core refuses), so offer what it can do: a restart."""
        loop = self.loop(name)
        if loop is not None and loop.state in END_STATES:
            self.restart(name)
        elif loop is not None and loop.state in ("paused", "stuck", "pausing"):
            self.control(f"resume {name}", lambda: self.handle.resume(name))
        else:
            self.control(f"pause {name}", lambda: self.handle.pause(name))

    def ask_stop(self, name: str) -> None:
        confirm(
            self,
            f"Stop loop {name!r}?",
            "Its running turn is cancelled and its processes killed. `r` restarts it.",
            "Stop",
            lambda: self.control(f"stop {name}", lambda: self.handle.stop(name)),
        )

    def restart(self, name: str) -> None:
        """Ask first, and say what carries over: spent budget stays spent (it was real
        money), so a loop at 90% of its budget restarts at 90%."""
        loop = self.loop(name)
        spent = fmt.share(loop) if loop is not None else None
        state = f"It is {loop.state}; it" if loop is not None else "It"
        budget = (
            f" Its spend stays: {fmt.percent(spent)} of its budget is used."
            if spent is not None
            else ""
        )
        confirm(
            self,
            f"Restart loop {name!r} from iteration 1?",
            f"{state} starts again from iteration 1 with a fresh conversation.{budget}",
            "Restart",
            lambda: self.control(f"restart {name}", lambda: self.handle.restart(name)),
        )

    def ask_land(self, name: str) -> None:
        """`L`: ask, then land the loop's branch through the `land` op (so it works
        attached); what was done, or why not (a conflict names its files), is the
        notification."""

        async def run() -> None:
            try:
                message = await self.handle.land(name)
            except ControlError as exc:
                self.notify(str(exc), title=f"land {name}: not landed", severity="error")
            else:
                self.notify(message, title=f"land {name}", timeout=10)
            self.poke()

        confirm(
            self,
            f"Land loop {name!r}?",
            "Its branch is merged into the branch its worktree was made from; uncommitted"
            " changes in its worktree are committed first. A conflict changes nothing.",
            "Land",
            lambda: self.run_worker(run(), group="control"),
        )

    def pause_all(self) -> None:
        self.control("pause all", lambda: self.handle.pause(None))

    def resume_all(self) -> None:
        self.control("resume all", lambda: self.handle.resume(None))

    def stop_all(self) -> None:
        confirm(
            self,
            "Stop every loop?",
            "Running turns are cancelled and their processes killed.",
            "Stop all",
            lambda: self.control("stop all", lambda: self.handle.stop(None)),
        )

    def edit(self, name: str) -> None:
        from tui.screens.edit import EditScreen

        if (loop := self.loop(name)) is not None:
            self.push_screen(EditScreen(loop))

    def global_budget(self) -> None:
        from tui.screens.budget import BudgetScreen

        if self.snapshot is not None:
            self.push_screen(BudgetScreen(self.snapshot.budget))

    def inject(self, name: str) -> None:
        from tui.screens.inject import InjectScreen

        self.push_screen(InjectScreen(name))

    def step_in(self, name: str) -> None:
        self.run_worker(step_in(self, name), group="step-in", exclusive=True)

    def history(self, name: str) -> None:
        from tui.screens.history import HistoryScreen

        self.push_screen(HistoryScreen(name))

    def diff(self, name: str, iteration: int | None = None) -> None:
        from tui.screens.diff import DiffScreen

        self.push_screen(DiffScreen(name, iteration))

    def fork(self, name: str, iteration: int) -> None:
        """Ask the new loop's name, then fork it through the `fork` op (so it works
        attached); the fork's loop is focused once the snapshot has it."""
        from tui.screens.fork import ForkScreen

        def done(forked: str | None) -> None:
            if forked:
                self.poke()
                self.call_later(self.focus_loop, forked)

        self.push_screen(ForkScreen(name, iteration), done)

    def inbox(self) -> None:
        from tui.screens.inbox import InboxScreen

        self.push_screen(InboxScreen())

    def help(self) -> None:
        from tui.screens.help import HelpScreen

        self.push_screen(HelpScreen())
