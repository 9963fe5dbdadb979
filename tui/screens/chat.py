"""ChatScreen: the operator talks to a paused loop's agent, on the loop's conversation.

Replies stream into the view as the loop's own `output` events (tokens are charged
to the loop); `ctrl+r` hands the loop back, `esc` leaves it paused.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from supervisor.api import ControlError, RunSnapshot
from tui.live import lv
from tui.widgets.transcript import TranscriptView


class ChatScreen(Screen[None]):
    CSS_PATH = "chat.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "hand_back", "hand back", priority=True),
        Binding("escape", "leave", "leave paused"),
    ]

    def __init__(self, loop: str, *, agent_kind: str = "") -> None:
        super().__init__()
        self.loop = loop
        self.agent_kind = agent_kind
        self.replies: list[str] = []
        """Every reply `chat()` returned, in order (tests and the status line use it)."""

    def compose(self) -> ComposeResult:
        kind = f" ({self.agent_kind})" if self.agent_kind else ""
        yield Static(
            f"Step-in chat · {self.loop}{kind} is paused; you talk to its agent. "
            "ctrl+r hands back, esc leaves it paused.",
            id="heading",
        )
        yield TranscriptView(id="chat-transcript")
        yield Static("", id="status")
        yield Input(placeholder="message to the agent (enter sends)", id="say")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.view = self.query_one(TranscriptView)
        self.live_tick()
        self.query_one(Input).focus()

    def live_tick(self) -> None:
        self.view.sync(self.loop, lv(self).transcripts.get(self.loop))

    def live_snapshot(self, snapshot: RunSnapshot) -> None:
        return None

    @on(Input.Submitted, "#say")
    def _send(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        event.input.value = ""
        self._chat(text)

    @work(group="chat", exclusive=False)
    async def _chat(self, text: str) -> None:
        status = self.query_one("#status", Static)
        status.update("the agent is replying…")
        try:
            reply = await lv(self).handle.chat(self.loop, text)
        except ControlError as exc:
            status.update(f"refused: {exc}")
            return
        self.replies.append(reply)
        status.update(f"reply: {len(reply.split())} words · ctrl+r hands the loop back")
        self.live_tick()

    async def action_hand_back(self) -> None:
        app = lv(self)
        try:
            await app.handle.hand_back(self.loop)
        except ControlError as exc:
            self.query_one("#status", Static).update(f"hand back refused: {exc}")
            return
        app.notify(f"{self.loop} handed back: it continues from this conversation", timeout=4)
        app.poke()
        self.dismiss(None)

    def action_leave(self) -> None:
        lv(self).notify(f"{self.loop} stays paused: p resumes, enter steps in again", timeout=4)
        self.dismiss(None)
