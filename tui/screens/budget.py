"""BudgetScreen: the run's global limits, raised (or lowered) from the console.

What `ctl budget --tokens N --usd X` does, through the same `budget` op of the handle
(so it works attached): loops the global budget paused (`on_exhausted = "pause"`) go
on once it is no longer spent. The dialog follows the edit screen's keys (ctrl+s
applies, esc cancels; its fields take letters, so no y/n) and reads the fields as the
edit screen does (`edit._number`: empty is no limit); the core judges the values
(`ControlError`, shown inline). Wall and CPU limits are kept as they are.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from supervisor.api import BudgetSnapshot, ControlError
from supervisor.spec import Limits
from tui.live import lv
from tui.screens.edit import _number


def read_limits(current: Limits, tokens: str, usd: str) -> tuple[list[str], Limits | None]:
    """Problems (empty when valid) and the new limits: `current` with tokens and USD
    from the fields."""
    tok, tok_problem = _number(tokens, "tokens", int)
    dollars, usd_problem = _number(usd, "USD", float)
    problems = [p for p in (tok_problem, usd_problem) if p]
    if problems:
        return problems, None
    return [], dataclasses.replace(current, tokens=None if tok is None else int(tok), usd=dollars)


class BudgetScreen(ModalScreen[bool]):
    """Dismisses with True once the op took the new limits, False when cancelled."""

    CSS_PATH = "budget.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "apply", "apply", priority=True),
        Binding("escape", "cancel", "cancel", priority=True),
    ]

    def __init__(self, budget: BudgetSnapshot) -> None:
        super().__init__()
        self.budget = budget

    def compose(self) -> ComposeResult:
        b, lim = self.budget, self.budget.limits
        spent = f"spent {b.tokens:,} tokens, ${b.usd:.4f}"
        with Vertical(id="dialog"):
            yield Static("Global budget · loops it paused go on", id="heading")
            yield Static(f"{spent} · empty: no limit", id="hint")
            with Grid(id="limits"):
                yield Label("tokens")
                yield Input("" if lim.tokens is None else str(lim.tokens), id="tokens")
                yield Label("USD")
                yield Input("" if lim.usd is None else f"{lim.usd:g}", id="usd")
            yield Static("", id="errors")
            with Horizontal(id="buttons"):
                yield Button("Apply [ctrl+s]", id="apply", variant="primary")
                yield Button("Cancel [esc]", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#tokens", Input).focus()

    def _read(self) -> tuple[list[str], Limits | None]:
        problems, limits = read_limits(
            self.budget.limits,
            self.query_one("#tokens", Input).value,
            self.query_one("#usd", Input).value,
        )
        self._show(problems)
        return problems, limits

    def _show(self, problems: list[str]) -> None:
        errors = self.query_one("#errors", Static)
        errors.update("\n".join(f"✘ {p}" for p in problems))
        errors.set_class(bool(problems), "shown")
        self.query_one("#apply", Button).disabled = bool(problems)

    @on(Input.Changed)
    def _changed(self) -> None:
        self._read()

    @on(Input.Submitted)
    @on(Button.Pressed, "#apply")
    async def _apply(self) -> None:
        await self.action_apply()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    async def action_apply(self) -> None:
        problems, limits = self._read()
        if problems or limits is None:
            return
        if limits == self.budget.limits:
            self.notify("nothing changed", timeout=3)
            self.dismiss(False)
            return
        app = lv(self)
        try:
            await app.handle.budget(limits)
        except ControlError as exc:
            self._show([str(exc)])
            return
        app.notify("global budget changed", timeout=5)
        app.poke()
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)
