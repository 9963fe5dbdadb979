"""How screens hear about new data: the app calls these on every screen that has them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, cast, runtime_checkable

from textual.dom import DOMNode

from supervisor.api import RunSnapshot

if TYPE_CHECKING:
    from tui.app import LoopvisorApp


@runtime_checkable
class Live(Protocol):
    def live_snapshot(self, snapshot: RunSnapshot) -> None:
        """A new snapshot (~4 Hz, and right after each control operation)."""

    def live_tick(self) -> None:
        """Transcript flush tick (~15 Hz): pull new lines from `app.transcripts`."""


def lv(node: DOMNode) -> LoopvisorApp:
    """The running app, typed."""
    return cast("LoopvisorApp", node.app)
