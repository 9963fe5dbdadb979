"""Command palette (ctrl+p): every action on the focused loop, global ones, and go-to-loop."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui.live import lv

Command = tuple[str, Callable[[], object], str]
"""Palette text, what it does, help line."""


class LoopCommands(Provider):
    def commands(self) -> list[Command]:
        app = lv(self.screen)
        cmds: list[Command] = []
        name = app.focused_loop
        if name is not None:
            cmds += [
                (f"Pause / resume {name}", partial(app.toggle_pause, name), "p"),
                (f"Stop {name}", partial(app.ask_stop, name), "s: asks first"),
                (f"Restart {name}", partial(app.restart, name), "r: from iteration 1, asks first"),
                (f"Edit {name}", partial(app.edit, name), "e: prompt, max_iterations, budget"),
                (f"Inject a message into {name}", partial(app.inject, name), "i: next prompt"),
                (f"Step into {name}", partial(app.step_in, name), "enter: chat or claude"),
                (f"History of {name}", partial(app.history, name), "h: iterations"),
            ]
        cmds += [
            ("Pause all loops", app.pause_all, "at their next safe point"),
            ("Resume all loops", app.resume_all, "paused and stuck loops"),
            ("Stop all loops", app.stop_all, "asks first"),
            ("Attention inbox", app.inbox, "a: loops that need you"),
            ("Keys", app.help, "?: every key"),
        ]
        if app.snapshot is not None:
            cmds += [
                (f"Go to loop {loop.name}", partial(app.focus_loop, loop.name), loop.state)
                for loop in app.snapshot.loops
            ]
        return cmds

    async def discover(self) -> Hits:
        for text, action, help_text in self.commands():
            yield DiscoveryHit(text, action, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, action, help_text in self.commands():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), action, text=text, help=help_text)
