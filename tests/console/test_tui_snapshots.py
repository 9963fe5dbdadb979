"""SVG snapshots of the console's screens at 80x24 and 160x48 (pytest-textual-snapshot).

The data is a fixed `RunSnapshot` served by `FixedHandle` with a frozen clock, so
every cell is deterministic: five loops (running, stuck, succeeded, waiting on a
rate limit, paused) and a global budget at 20%. Regenerate after a deliberate UI
change with `pytest tests/console/test_tui_snapshots.py --snapshot-update` and review
the SVGs under tests/console/__snapshots__/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from console_support import fixed_app
from textual.pilot import Pilot

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]
Compare = Callable[..., bool]


async def settle(pilot: Pilot[Any]) -> None:
    """Wait for the first snapshot to reach the widgets, then for the screen to settle."""
    for _ in range(50):
        if pilot.app.snapshot is not None:  # type: ignore[attr-defined]  # Pilot[Any].app is an App
            break
        await pilot.pause(0.02)
    await pilot.pause(0.3)


@pytest.mark.parametrize("size", SIZES)
def test_main_screen(snap_compare: Compare, size: tuple[int, int]) -> None:
    """Main screen: gauges (tokens 20%, USD 4%, wall, CPU, 2/4 slots, burn still
    measuring), the loops table with the stuck and paused loops sorted first and
    coloured, the waiting loop's seconds left, and the focused (stuck) loop's
    transcript with each kind of line in its colour; footer keys."""
    app, _ = fixed_app()
    assert snap_compare(app, terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES)
def test_attention_inbox(snap_compare: Compare, size: tuple[int, int]) -> None:
    """Attention inbox (`a`): the stuck loop with its detector evidence and the paused
    loop with its reason, each with the keys that act on it."""
    app, _ = fixed_app()
    assert snap_compare(app, terminal_size=size, run_before=settle, press=["a", "wait:200"])


@pytest.mark.parametrize("size", SIZES)
def test_edit_screen(snap_compare: Compare, size: tuple[int, int]) -> None:
    """Edit screen (`e`) on the stuck loop: its prompt template in a TextArea, and
    max_iterations and budget fields, with an inline error for an unknown placeholder
    typed at the end of the prompt (shown before anything is applied)."""
    app, _ = fixed_app()
    assert snap_compare(
        app,
        terminal_size=size,
        run_before=settle,
        press=["e", "wait:200", "down", "end", *" $oops", "wait:200"],
    )


@pytest.mark.parametrize("size", SIZES)
def test_help_screen(snap_compare: Compare, size: tuple[int, int]) -> None:
    """Help (`?`): every key of the main screen, the inbox, the chat and the editor."""
    app, _ = fixed_app()
    assert snap_compare(app, terminal_size=size, run_before=settle, press=["question_mark"])


def test_confirm_dialog(snap_compare: Compare) -> None:
    """The one confirmation dialog (`s` on fizzbuzz) at 80x24: both buttons show their
    key ("[y] Stop", "[n] Cancel"), focus on Cancel."""
    app, _ = fixed_app()

    async def focus_fizzbuzz(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        assert app.main is not None
        app.main.focus_loop("fizzbuzz")
        await pilot.pause(0.1)

    assert snap_compare(
        app, terminal_size=(80, 24), run_before=focus_fizzbuzz, press=["s", "wait:200"]
    )
