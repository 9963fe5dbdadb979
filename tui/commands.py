"""Command palette (ctrl+p): the commands of `tui.keys` (those on the focused loop, the
global ones) and go-to-loop."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui.keys import COMMANDS
from tui.live import lv

PaletteEntry = tuple[str, Callable[[], object], str]
"""Palette text, what it does, help line."""


class LoopCommands(Provider):
    def commands(self) -> list[PaletteEntry]:
        """`tui.keys.COMMANDS` in the palette (those on a loop only when one is focused),
        then one "go to" per loop."""
        app = lv(self.screen)
        cmds: list[PaletteEntry] = []
        name = app.focused_loop
        for command in COMMANDS:
            if not command.palette or command.action is None:
                continue
            run = getattr(app, command.action)
            if command.per_loop:
                if name is None:
                    continue
                text, run = command.palette.format(loop=name), partial(run, name)
            else:
                text = command.palette
            cmds.append((text, run, command.palette_hint))
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
