"""One source of keys (`tui.keys`): the main screen's and the app's bindings, the help
screen, the command palette and README's key table are all built from it."""

from __future__ import annotations

from helpers import REPO
from textual.binding import Binding, BindingType

from tui.actions import OperatorActions
from tui.app import LoopvisorApp
from tui.keys import COMMANDS, MAIN_SECTION, OTHER_SECTIONS, help_sections, readme_table
from tui.screens.budget import BudgetScreen
from tui.screens.chat import ChatScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.diff import DiffScreen
from tui.screens.edit import EditScreen
from tui.screens.history import HistoryScreen
from tui.screens.inbox import InboxScreen
from tui.screens.main import MainScreen

README = REPO / "README.md"
NAMES = {"slash": "/", "question_mark": "?", "escape": "esc", "up": "↑", "down": "↓"}
"""Textual's key names as the help and README write them."""


def written(bindings: list[BindingType]) -> set[str]:
    return {NAMES.get(b.key, b.key) for b in bindings if isinstance(b, Binding)}


def listed(rows: tuple[tuple[str, str], ...]) -> set[str]:
    return {key for keys, _ in rows for key in keys.split()}


def test_readmes_key_table_is_the_one_built_from_the_source() -> None:
    """README keeps its look; run `python -m tui.keys` to print the table again."""
    section = README.read_text(encoding="utf-8").split("## The operator console", 1)[1]
    assert readme_table() in section.split("\n## ", 1)[0]


def test_the_main_screen_and_the_app_bind_what_the_source_says() -> None:
    assert [b for c in COMMANDS for b in c.bindings] == MainScreen.BINDINGS
    assert [b for c in COMMANDS for b in c.app_bindings] == LoopvisorApp.BINDINGS
    main = dict(help_sections())[MAIN_SECTION]
    bound = written([*MainScreen.BINDINGS, *LoopvisorApp.BINDINGS])
    bound.add(LoopvisorApp.COMMAND_PALETTE_BINDING)
    assert bound - listed(main) == set(), "help does not list these keys"


def test_every_command_runs_an_operator_action() -> None:
    for command in COMMANDS:
        if command.action is not None:
            assert callable(getattr(OperatorActions, command.action, None)), command.action
        if command.palette:
            assert command.action is not None
            assert ("{loop}" in command.palette) == command.per_loop
    for binding in MainScreen.BINDINGS:
        assert isinstance(binding, Binding)
        name = binding.action.split("(", 1)[0]
        assert callable(getattr(MainScreen, f"action_{name}", None)), binding.action


def test_the_other_screens_keys_are_on_the_help_screen() -> None:
    sections = dict(OTHER_SECTIONS)
    for title, screen in (
        ("Attention inbox", InboxScreen),
        ("Step-in chat", ChatScreen),
        ("Edit", EditScreen),
        ("Global budget", BudgetScreen),
        ("Any question", ConfirmScreen),
        ("History", HistoryScreen),
        ("Diff", DiffScreen),
    ):
        missing = written(screen.BINDINGS) - listed(sections[title])
        assert missing == set(), f"{title}: {missing}"
