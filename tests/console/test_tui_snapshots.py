"""SVG snapshots of the console's screens at 80x24 and 160x48 (pytest-textual-snapshot).

The data is a fixed `RunSnapshot` served by `FixedHandle` with a frozen clock, so
every cell is deterministic: five loops (running, stuck, succeeded, waiting on a
rate limit, paused) and a global budget at 20%. Regenerate after a deliberate UI
change with `pytest tests/console/test_tui_snapshots.py --snapshot-update` and review
the SVGs under tests/console/__snapshots__/.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from console_support import demo_snapshot, fixed_app
from textual.pilot import Pilot
from textual.widgets import Static, TextArea

from tui.screens.edit import EditScreen

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]
Compare = Callable[..., bool]


async def settle(pilot: Pilot[Any]) -> None:
    """Wait for the first snapshot to reach the widgets, then for the screen to settle."""
    for _ in range(50):
        if pilot.app.snapshot is not None:  # type: ignore[attr-defined]  # Pilot[Any].app is an App
            break
        await pilot.pause(0.02)
    await pilot.pause(0.3)


async def until(pilot: Pilot[Any], done: Callable[[], bool]) -> None:
    """Let the app run until `done()` (the test's own timeout bounds it)."""
    while not done():
        await pilot.pause(0.02)


@pytest.mark.parametrize("size", SIZES)
def test_main_screen(snap_compare: Compare, size: tuple[int, int]) -> None:
    """Main screen: gauges (tokens 20%, USD 4%, wall, CPU, 2/4 slots, burn still
    measuring), the loops table with the stuck and paused loops sorted first and
    coloured, the waiting loop's seconds left, and the focused (stuck) loop's
    transcript with each kind of line in its colour; footer keys."""
    app, _ = fixed_app()
    assert snap_compare(app, terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES)
def test_main_screen_metric_loop(snap_compare: Compare, size: tuple[int, int]) -> None:
    """The focused loop is a metric loop: under its title one line with its last and
    best score and a sparkline of every judged iteration (the one without a score at
    the bottom); the rest of the screen as in `test_main_screen`."""
    demo = demo_snapshot()
    scores = (0.41, 0.55, 0.52, None, 0.61, 0.58)
    loops = tuple(
        replace(loop, scores=scores, best_score=0.61, best_iteration=5)
        if loop.name == "parser"
        else loop
        for loop in demo.loops
    )
    app, _ = fixed_app(replace(demo, loops=loops))
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

    async def type_a_bad_placeholder(pilot: Pilot[Any]) -> None:
        # Waits for what each key does instead of a fixed 200 ms, which a loaded
        # 2-core machine overran (the editor was not open yet when the text came).
        await settle(pilot)
        await pilot.press("e")
        await until(pilot, lambda: isinstance(pilot.app.screen, EditScreen))
        prompt = pilot.app.screen.query_one("#prompt", TextArea)
        await until(pilot, lambda: prompt.has_focus)
        await pilot.press("down", "end", *" $oops")
        errors = pilot.app.screen.query_one("#errors", Static)
        # The error of the whole text, not of a prefix ("$o") a keystroke left shown.
        await until(pilot, lambda: "$oops" in str(errors.content))
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=type_a_bad_placeholder)


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


PATCH = """\
diff --git a/duration.py b/duration.py
index 3b18e51..9a1f2c4 100644
--- a/duration.py
+++ b/duration.py
@@ -1,9 +1,14 @@
 import re

-UNITS = {"s": 1, "m": 60}
+UNITS = {"s": 1, "m": 60, "h": 3600}
+PART = re.compile(r"(\\d+)([smh])")


 def parse(text: str) -> int:
-    number, unit = text[:-1], text[-1]
-    return int(number) * UNITS[unit]
+    parts = PART.findall(text)
+    if not parts or "".join(n + u for n, u in parts) != text:
+        raise ValueError(f"not a duration: {text!r} (expected something like 1h30m or 90s)")
+    return sum(int(n) * UNITS[u] for n, u in parts)
diff --git a/test_duration.py b/test_duration.py
new file mode 100644
index 0000000..e69de29
--- /dev/null
+++ b/test_duration.py
@@ -0,0 +1,6 @@
+from duration import parse
+
+
+def test_compound() -> None:
+    assert parse("1h30m") == 5400
+    assert parse("90s") == 90
"""


def parser_diff() -> Any:
    from supervisor.api import LoopDiff

    return LoopDiff(
        loop="parser",
        iteration=None,
        base="9d0c6b1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c",
        head="3f1c2a9e0b7d4c6a8e5f1b2d3c4a5e6f7a8b9c0d",
        stat="2 files changed, 10 insertions(+), 3 deletions(-)",
        text=PATCH,
        note="the worktree has 1 uncommitted path (the iteration running now): not in this diff",
    )


@pytest.mark.parametrize("size", SIZES)
def test_diff_screen(snap_compare: Compare, size: tuple[int, int]) -> None:
    """Diff (`d`) of the stuck loop: heading with the range and git's stat line, the
    note about uncommitted files, file headers bold, `@@` cyan, `+` green, `-` red, a
    long added line wrapped (not cut) at 80 columns."""
    app, _ = fixed_app(diffs={("parser", None): parser_diff()})
    assert snap_compare(app, terminal_size=size, run_before=settle, press=["d", "wait:300"])
