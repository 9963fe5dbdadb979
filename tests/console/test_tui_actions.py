"""Every key of the console against a real Supervisor running sim agents (Pilot).

Each test drives the real app with the keyboard and checks what the core did from
the events it published (recorded losslessly by a bus sink), so a key that only
changed the screen without reaching the core fails.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from console_support import (
    FAILING_CHECK,
    TuiRun,
    endless_loop,
    screen_text,
    sim_config,
    tui,
)
from helpers import PY
from textual.command import CommandList, CommandPalette
from textual.widgets import Input, OptionList, TextArea

from supervisor import events as ev
from supervisor.lines import LineKind
from tui.screens.chat import ChatScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.edit import EditScreen
from tui.screens.help import HelpScreen
from tui.screens.inbox import InboxScreen
from tui.screens.inject import InjectScreen
from tui.widgets.transcript import TranscriptView

pytestmark = pytest.mark.anyio


def cell(run: TuiRun, loop: str, column: str) -> str:
    main = run.app.main
    assert main is not None
    return str(main.table.get_cell(loop, column))


def started(run: TuiRun, loop: str) -> list[ev.IterationStarted]:
    return run.of(ev.IterationStarted, loop)


async def test_pause_stops_new_iterations_and_p_resumes(tmp_path: Path) -> None:
    config = sim_config(tmp_path, endless_loop("alpha"), endless_loop("beta"))
    async with tui(config) as run:
        await run.until(lambda: len(started(run, "alpha")) >= 2)
        await run.focus("alpha")
        await run.pilot.press("p")
        await run.until(lambda: run.state("alpha") == "paused")
        paused = next(
            i
            for i, e in enumerate(run.events)
            if isinstance(e, ev.LoopStateChanged) and e.loop == "alpha" and e.state == "paused"
        )
        beta_then = len(started(run, "beta"))
        await run.until(lambda: len(started(run, "beta")) >= beta_then + 5)  # time passes
        after = run.events[paused:]
        assert not [e for e in after if isinstance(e, ev.IterationStarted) and e.loop == "alpha"]
        await run.until(lambda: cell(run, "alpha", "state") == "paused")
        assert run.app.main is not None
        assert run.app.main.table.order[0] == "alpha"
        count = len(started(run, "alpha"))
        await run.pilot.press("p")
        await run.until(lambda: len(started(run, "alpha")) > count)
        assert any(e.op == "resume" for e in run.of(ev.ControlApplied))


async def test_edit_changes_the_next_prompt_and_shows_errors_before_applying(
    tmp_path: Path,
) -> None:
    config = sim_config(tmp_path, endless_loop("alpha"))
    async with tui(config) as run:
        await run.focus("alpha")
        await run.pilot.press("e")
        await run.until(lambda: isinstance(run.app.screen, EditScreen))
        screen = run.app.screen
        area = screen.query_one(TextArea)
        area.load_text("Broken $nope here")
        await run.until(lambda: "nope" in str(screen.query_one("#errors").render()))
        await run.pilot.press("ctrl+s")
        assert isinstance(run.app.screen, EditScreen)  # refused inline, nothing applied
        assert not [e for e in run.of(ev.ControlApplied) if e.op == "edit"]
        area.load_text("Edited prompt for $loop, iteration $iteration.")
        iterations = screen.query_one("#max_iterations", Input)
        iterations.value = "0"
        await run.until(lambda: "max_iterations" in str(screen.query_one("#errors").render()))
        iterations.value = "50000"
        await run.pilot.pause()
        await run.pilot.press("ctrl+s")
        await run.until(lambda: not isinstance(run.app.screen, EditScreen))
        edited = next(e for e in run.of(ev.ControlApplied) if e.op == "edit")
        at = run.events.index(edited)
        await run.until(
            lambda: any(
                isinstance(e, ev.IterationStarted) and e.loop == "alpha" for e in run.events[at:]
            )
        )
        first = next(
            e for e in run.events[at:] if isinstance(e, ev.IterationStarted) and e.loop == "alpha"
        )
        assert first.prompt == f"Edited prompt for alpha, iteration {first.iteration}."
        assert run.supervisor.runners["alpha"].spec.max_iterations == 50_000


async def test_inject_appears_in_the_next_prompt(tmp_path: Path) -> None:
    config = sim_config(tmp_path, endless_loop("alpha"))
    async with tui(config) as run:
        await run.focus("alpha")
        await run.pilot.press("i")
        await run.until(lambda: isinstance(run.app.screen, InjectScreen))
        await run.pilot.press(*"use the fixture", "enter")
        await run.until(lambda: not isinstance(run.app.screen, InjectScreen))
        injected = next(e for e in run.of(ev.ControlApplied) if e.op == "inject")
        at = run.events.index(injected)
        await run.until(
            lambda: any(
                isinstance(e, ev.IterationStarted) and "Operator note: use the fixture" in e.prompt
                for e in run.events[at:]
            )
        )


async def test_stop_asks_first_then_stops(tmp_path: Path) -> None:
    config = sim_config(tmp_path, endless_loop("alpha"), endless_loop("beta"))
    async with tui(config) as run:
        await run.focus("beta")
        await run.pilot.press("s")
        await run.until(lambda: isinstance(run.app.screen, ConfirmScreen))
        await run.pilot.press("n")
        await run.until(lambda: not isinstance(run.app.screen, ConfirmScreen))
        count = len(started(run, "beta"))
        await run.until(lambda: len(started(run, "beta")) > count + 2)
        assert run.state("beta") not in ("stopped",)
        await run.pilot.press("s")
        await run.until(lambda: isinstance(run.app.screen, ConfirmScreen))
        await run.pilot.press("y")
        await run.until(lambda: run.state("beta") == "stopped")
        await run.until(lambda: cell(run, "beta", "state") == "stopped")
        assert run.state("alpha") != "stopped"


async def test_restart_starts_again_from_iteration_one(tmp_path: Path) -> None:
    config = sim_config(tmp_path, endless_loop("alpha"))
    async with tui(config) as run:
        await run.until(lambda: len(started(run, "alpha")) >= 3)
        await run.focus("alpha")
        await run.pilot.press("r")
        await run.until(lambda: isinstance(run.app.screen, ConfirmScreen))
        await run.pilot.press("y")
        restarted = await_index(run, "restart")
        await run.until(lambda: restarted() is not None)
        at = restarted()
        assert at is not None
        await run.until(
            lambda: any(
                isinstance(e, ev.IterationStarted) and e.loop == "alpha" for e in run.events[at:]
            )
        )
        first = next(
            e for e in run.events[at:] if isinstance(e, ev.IterationStarted) and e.loop == "alpha"
        )
        assert first.iteration == 1


def await_index(run: TuiRun, op: str) -> Callable[[], int | None]:
    def find() -> int | None:
        for i, e in enumerate(run.events):
            if isinstance(e, ev.ControlApplied) and e.op == op:
                return i
        return None

    return find


async def test_step_in_chat_returns_text_and_hand_back_resumes(tmp_path: Path) -> None:
    config = sim_config(tmp_path, endless_loop("alpha"))
    async with tui(config, size=(100, 30)) as run:
        await run.focus("alpha")
        await run.pilot.press("enter")
        await run.until(lambda: isinstance(run.app.screen, ChatScreen))
        chat = run.app.screen
        assert isinstance(chat, ChatScreen)
        assert run.state("alpha") == "paused"
        await run.pilot.press(*"why the loop", "enter")
        await run.until(lambda: bool(chat.replies))
        reply = chat.replies[0]
        assert reply.strip()
        view = chat.query_one(TranscriptView)
        first_words = " ".join(reply.split()[:3])
        await run.until(lambda: any(first_words in line.text for line in view.lines))
        assert any(line == (LineKind.OPERATOR, "[operator] why the loop") for line in view.lines)
        count = len(started(run, "alpha"))
        await run.pilot.press("ctrl+r")
        await run.until(lambda: not isinstance(run.app.screen, ChatScreen))
        await run.until(lambda: len(started(run, "alpha")) > count)
        assert [e.op for e in run.of(ev.ControlApplied) if e.loop == "alpha"][-2:] == [
            "hand_back",
            "resume",
        ]


async def test_filter_hides_rows_and_escape_shows_them(tmp_path: Path) -> None:
    config = sim_config(
        tmp_path, endless_loop("parse-a"), endless_loop("parse-b"), endless_loop("render")
    )
    async with tui(config) as run:
        main = run.app.main
        assert main is not None
        await run.until(lambda: len(main.table.order) == 3)
        await run.pilot.press("slash", *"parse")
        await run.until(lambda: main.table.order == ["parse-a", "parse-b"])
        assert main.table.row_count == 2
        await run.pilot.press("enter")  # keeps the filter, back to the table
        assert main.table.has_focus
        await run.pilot.pause(0.5)  # snapshots keep coming: still filtered
        assert main.table.order == ["parse-a", "parse-b"]
        await run.pilot.press("escape")
        await run.until(lambda: len(main.table.order) == 3)


async def test_inbox_lists_the_stuck_loop_with_its_evidence(tmp_path: Path) -> None:
    config = sim_config(
        tmp_path,
        endless_loop("healthy"),
        endless_loop(
            "parser",
            "stubborn",
            on_stuck="pause",
            stuck={"same_failure": 2},
            checks=[{"name": "unit", "run": FAILING_CHECK}],
        ),
    )
    async with tui(config) as run:
        await run.until(lambda: run.state("parser") == "stuck")
        main = run.app.main
        assert main is not None
        await run.until(lambda: main.table.order[0] == "parser")
        await run.pilot.press("a")
        await run.until(lambda: isinstance(run.app.screen, InboxScreen))
        options = run.app.screen.query_one(OptionList)
        await run.until(lambda: options.option_count == 1)
        text = str(options.get_option_at_index(0).prompt)
        assert "parser" in text
        assert "stuck" in text
        assert "same check failure 2×" in text
        assert "FAIL: test_parse" in text
        assert "p resume" in text
        await run.pilot.press("p")  # resume from the inbox
        await run.until(
            lambda: any(e.op == "resume" and e.loop == "parser" for e in run.of(ev.ControlApplied)),
            timeout=5,
        )
        await run.pilot.press("escape")
        await run.until(lambda: not isinstance(run.app.screen, InboxScreen))


async def test_help_opens_and_closes(tmp_path: Path) -> None:
    config = sim_config(tmp_path, endless_loop("alpha"))
    async with tui(config) as run:
        await run.pilot.press("question_mark")
        await run.until(lambda: isinstance(run.app.screen, HelpScreen))
        text = screen_text(run.app)
        for key in ("pause / resume", "step in", "command palette", "attention inbox"):
            assert key in text
        await run.pilot.press("escape")
        await run.until(lambda: not isinstance(run.app.screen, HelpScreen))


async def test_palette_lists_loop_and_global_actions_and_runs_them(tmp_path: Path) -> None:
    config = sim_config(tmp_path, endless_loop("alpha"), endless_loop("beta"))
    async with tui(config) as run:
        await run.focus("alpha")
        await run.pilot.press("ctrl+p")
        await run.until(lambda: isinstance(run.app.screen, CommandPalette))
        commands = run.app.screen.query_one(CommandList)

        def prompts() -> list[str]:
            return [
                str(commands.get_option_at_index(i).prompt) for i in range(commands.option_count)
            ]

        await run.until(lambda: any("Pause all loops" in p for p in prompts()))
        shown = "\n".join(prompts())
        for action in (
            "Pause / resume alpha",
            "Stop alpha",
            "Restart alpha",
            "Edit alpha",
            "Inject a message into alpha",
            "Step into alpha",
            "Resume all loops",
            "Stop all loops",
            "Go to loop beta",
        ):
            assert action in shown
        await run.pilot.press(*"pause all", "enter")
        await run.until(lambda: run.state("alpha") == "paused" and run.state("beta") == "paused")


async def test_quit_asks_while_loops_run_then_stops_them(tmp_path: Path) -> None:
    config = sim_config(tmp_path, endless_loop("alpha"))
    async with tui(config) as run:
        await run.until(lambda: len(started(run, "alpha")) >= 1)
        await run.pilot.press("q")
        await run.until(lambda: isinstance(run.app.screen, ConfirmScreen))
        await run.pilot.press("escape")
        await run.until(lambda: not isinstance(run.app.screen, ConfirmScreen))
        assert run.app.is_running
        assert run.state("alpha") != "stopped"
        await run.pilot.press("q")
        await run.until(lambda: isinstance(run.app.screen, ConfirmScreen))
        await run.pilot.press("y")
        await run.until(lambda: run.app.run_done)
        assert run.state("alpha") == "stopped"
        assert run.supervisor.exit_code() == 1
        summary = run.of(ev.RunFinished)
        assert summary
        assert summary[-1].exit_code == 1


async def test_quit_without_running_loops_exits_without_asking(tmp_path: Path) -> None:
    passing = {"name": "ok", "run": [PY, "-c", "pass"]}
    config = sim_config(tmp_path, endless_loop("alpha", done_marker=None, checks=[passing]))
    async with tui(config) as run:
        await run.until(lambda: run.state("alpha") == "succeeded")
        await run.until(lambda: cell(run, "alpha", "state") == "succeeded")
        await run.pilot.press("q")
        await run.until(lambda: run.app.run_done)
        assert run.supervisor.exit_code() == 0


async def test_resize_down_to_tiny_and_back_keeps_working(tmp_path: Path) -> None:
    config = sim_config(tmp_path, *(endless_loop(f"loop-{i}") for i in range(6)))
    async with tui(config, size=(160, 48)) as run:
        for size in ((80, 24), (40, 12), (20, 6), (200, 60), (80, 24)):
            await run.pilot.resize_terminal(*size)
            await run.pilot.pause(0.2)
        main = run.app.main
        assert main is not None
        assert len(main.table.order) == 6
        await run.pilot.press("down", "down")
        assert main.table.focused_loop == main.table.order[2]
