"""EditScreen: change a loop's prompt template and limits from its next iteration.

Validation runs on every keystroke with the core's own rules (`config.rules.
edit_problems`, the function the `edit` control op refuses by), so errors show inline
before anything is applied; turning the fields' text into numbers is the dialog's
part (empty: no limit). Whatever the core still refuses (`ControlError`) is shown the
same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, TextArea

from supervisor.api import ControlError, LoopSnapshot
from supervisor.config.rules import edit_problems
from supervisor.durations import format_duration, parse_duration
from supervisor.spec import Limits
from tui.live import lv


@dataclass(frozen=True, slots=True)
class EditValues:
    prompt: str
    max_iterations: int
    limits: Limits


def _number(text: str, label: str, kind: type[int] | type[float]) -> tuple[float | None, str]:
    """A field's number (None: empty, no limit) or why it is not one."""
    text = text.strip().replace("_", "").replace(",", "")
    if not text:
        return None, ""
    try:
        return kind(text), ""
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        return None, f"{label}: expected {what} or empty (no limit), got {text!r}"


FIELDS = ("prompt", "max_iterations", "budget.tokens", "budget.usd", "budget.wall")
"""The dialog's fields in order (problems are listed in it)."""


def validate_edit(
    prompt: str, max_iterations: str, tokens: str, usd: str, wall: str, *, cpu: float | None
) -> tuple[list[str], EditValues | None]:
    """Problems (empty when valid) and the parsed values: the fields' text is read here,
    the values are judged by `edit_problems`."""
    found: list[tuple[str, str]] = []  # (field, problem)
    iters, problem = _number(max_iterations, "max_iterations", int)
    if problem or iters is None:
        found.append(("max_iterations", problem or "max_iterations: required"))
    tok, problem = _number(tokens, "budget.tokens", int)
    found += [("budget.tokens", problem)] if problem else []
    dollars, problem = _number(usd, "budget.usd", float)
    found += [("budget.usd", problem)] if problem else []
    seconds: float | None = None
    if wall.strip():
        try:
            seconds = parse_duration(wall.strip())
        except ValueError as exc:
            found.append(("budget.wall", f"budget.wall: {exc}"))
    limits = Limits(tokens=None if tok is None else int(tok), usd=dollars, wall=seconds, cpu=cpu)
    judged = edit_problems(
        prompt=prompt, max_iterations=None if iters is None else int(iters), limits=limits
    )
    found += [(p.setting, str(p)) for p in judged]
    if found:
        rank = {field: i for i, field in enumerate(FIELDS)}
        found.sort(key=lambda item: rank.get(item[0], len(FIELDS)))
        return [text for _, text in found], None
    return [], EditValues(prompt, int(iters or 0), limits)


class EditScreen(ModalScreen[bool]):
    CSS_PATH = "edit.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "apply", "apply", priority=True),
        Binding("escape", "cancel", "cancel", priority=True),
    ]

    def __init__(self, loop: LoopSnapshot) -> None:
        super().__init__()
        self.loop = loop
        self.values: EditValues | None = None

    def compose(self) -> ComposeResult:
        loop, lim = self.loop, self.loop.limits
        with Vertical(id="dialog"):
            yield Static(f"Edit {loop.name} · applies from its next iteration", id="heading")
            yield Static(
                "placeholders: $iteration $max_iterations $check_output $last_output "
                "$loop $workspace",
                id="hint",
            )
            yield TextArea(loop.prompt, id="prompt", soft_wrap=True)
            with Grid(id="limits"):
                yield Label("max_iterations")
                yield Input(str(loop.max_iterations), id="max_iterations", compact=True)
                yield Label("budget tokens")
                tokens = "" if lim.tokens is None else str(lim.tokens)
                yield Input(tokens, id="tokens", compact=True)
                yield Label("budget USD")
                yield Input("" if lim.usd is None else f"{lim.usd:g}", id="usd", compact=True)
                yield Label("budget wall")
                wall = "" if lim.wall is None else format_duration(lim.wall)
                yield Input(wall, placeholder="e.g. 30m", id="wall", compact=True)
            yield Static("", id="errors")
            with Horizontal(id="buttons"):
                yield Button("Apply [ctrl+s]", id="apply", variant="primary")
                yield Button("Cancel [esc]", id="cancel")

    def on_mount(self) -> None:
        self.query_one(TextArea).focus()
        self._validate()

    def _value(self, field: str) -> str:
        return self.query_one(f"#{field}", Input).value

    def _validate(self) -> list[str]:
        problems, self.values = validate_edit(
            self.query_one(TextArea).text,
            self._value("max_iterations"),
            self._value("tokens"),
            self._value("usd"),
            self._value("wall"),
            cpu=self.loop.limits.cpu,
        )
        self._show(problems)
        return problems

    def _show(self, problems: list[str]) -> None:
        errors = self.query_one("#errors", Static)
        errors.update("\n".join(f"✘ {p}" for p in problems))
        errors.set_class(bool(problems), "shown")
        self.query_one("#apply", Button).disabled = bool(problems)

    @on(TextArea.Changed)
    @on(Input.Changed)
    def _changed(self) -> None:
        self._validate()

    @on(Input.Submitted)
    async def _submitted(self) -> None:
        await self.action_apply()

    @on(Button.Pressed, "#apply")
    async def _apply_pressed(self) -> None:
        await self.action_apply()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    async def action_apply(self) -> None:
        if self._validate() or self.values is None:
            return
        new, loop = self.values, self.loop
        changes = {
            "prompt": new.prompt if new.prompt != loop.prompt else None,
            "max_iterations": (
                new.max_iterations if new.max_iterations != loop.max_iterations else None
            ),
            "limits": new.limits if new.limits != loop.limits else None,
        }
        if all(v is None for v in changes.values()):
            self.notify("nothing changed", timeout=3)
            self.dismiss(False)
            return
        app = lv(self)
        try:
            await app.handle.edit(
                loop.name,
                prompt=new.prompt if changes["prompt"] is not None else None,
                max_iterations=new.max_iterations if changes["max_iterations"] else None,
                limits=new.limits if changes["limits"] is not None else None,
            )
        except ControlError as exc:
            self._show([str(exc)])
            return
        changed = ", ".join(k for k, v in changes.items() if v is not None)
        app.notify(f"{loop.name}: {changed} changed from its next iteration", timeout=5)
        app.poke()
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)
