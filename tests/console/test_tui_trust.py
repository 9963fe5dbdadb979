"""The console tells the truth (issue 11): what the operator sees and the keys they press
mean what they say.

- Every confirmation is the same dialog: `y` confirms, `n` / esc cancel, enter presses
  the focused button and focus starts on the safe one; its keys stay visible at 80x24.
- `r` asks before restarting and says the spend stays; `p` on a loop that ended offers
  a restart instead of a refused pause; the inbox moves with j/k.
- The selection survives a terminal resize; a finished loop's clock stops; a loop that
  succeeded no longer shows the evidence of an old stall.
- The run says when it is over, and the summary is printed on quit.
- An attached console says "disconnected" when its server dies and reattaches when a
  server answers on the socket again.
- README's key table is the main screen's bindings.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from console_support import demo_snapshot, endless_loop, fixed_app, screen_text, sim_config
from daemon import kill_daemon, sim_loops_toml, start_daemon
from helpers import PY, loop, sim_agent, wait_for
from textual.pilot import Pilot

from supervisor.lines import texts
from supervisor.runtime import Supervisor
from tui.app import LoopvisorApp
from tui.screens.confirm import ConfirmScreen
from tui.screens.inbox import InboxScreen

pytestmark = pytest.mark.anyio


async def settle(pilot: Pilot[Any]) -> None:
    """Until the first snapshot reached the table."""
    app = pilot.app
    assert isinstance(app, LoopvisorApp)
    with anyio.fail_after(10):
        while app.main is None or not app.main.table.order:
            await pilot.pause(0.02)


async def until(pilot: Pilot[Any], predicate: Any, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await pilot.pause(0.02)


def main_of(app: LoopvisorApp) -> Any:
    main = app.main
    assert main is not None
    return main


# -- 3: one confirmation dialog, keys visible ----------------------------------------
async def test_stop_dialog_shows_its_keys_at_80x24_and_enter_cancels() -> None:
    app, handle = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        main_of(app).focus_loop("fizzbuzz")
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.pause(0.1)
        text = screen_text(app)
        assert "[y] Stop" in text, text
        assert "[n] Cancel" in text, text
        await pilot.press("enter")  # focus starts on the safe button
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        await pilot.pause(0.1)
        assert not [c for c in handle.calls if c[0] == "stop"]
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: ("stop", ("fizzbuzz",)) in handle.calls)


async def test_quit_dialog_uses_the_same_keys() -> None:
    """`y` confirms in every dialog (the quit dialog used `s`, and `y` did nothing)."""
    app, handle = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.pause(0.1)
        text = screen_text(app)
        assert "[y] Stop and quit" in text, text
        assert "[n] Cancel" in text, text
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        assert ("shutdown", ()) not in handle.calls
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: ("shutdown", ()) in handle.calls)


DIALOGS = [
    pytest.param(lambda app: app.ask_stop("fizzbuzz"), "Stop", id="stop"),
    pytest.param(lambda app: app.stop_all(), "Stop all", id="stop-all"),
    pytest.param(lambda app: app.restart("parser"), "Restart", id="restart"),
    pytest.param(lambda app: app.ask_land("parser"), "Land", id="land"),
    pytest.param("q", "Stop and quit", id="quit"),
]


@pytest.mark.parametrize(("open_dialog", "label"), DIALOGS)
async def test_every_dialog_shows_both_keys_at_80x24_and_enter_changes_nothing(
    open_dialog: Any, label: str
) -> None:
    """Each confirmation the console asks (stop, stop all, restart, land, quit), at the
    smallest supported terminal: both buttons show their key as ConfirmScreen binds it,
    whole, and enter (focus on the safe button) neither confirms nor calls the core."""
    from tui.screens.confirm import CANCEL_KEYS, CONFIRM_KEY

    app, handle = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        if isinstance(open_dialog, str):
            await pilot.press(open_dialog)
        else:
            open_dialog(app)
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.pause(0.1)
        row = next(line for line in screen_text(app).splitlines() if "Cancel" in line)
        assert re.search(rf"\[{CONFIRM_KEY}\] {label}\s", row), row
        assert f"[{CANCEL_KEYS[0]}] Cancel " in row, row
        await pilot.press("enter")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        await pilot.pause(0.1)
        assert handle.calls == [], handle.calls


# -- 10: restart asks, p on an ended loop, the inbox keys -----------------------------
async def test_restart_asks_first_and_says_the_spend_stays() -> None:
    app, handle = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        main_of(app).focus_loop("parser")  # 7,100 of 8,000 tokens: 89%
        await pilot.press("r")
        await pilot.pause(0.2)
        assert ("restart", ("parser",)) not in handle.calls
        assert isinstance(app.screen, ConfirmScreen)
        text = screen_text(app)
        assert "89%" in text, text
        assert "[y] Restart" in text, text
        await pilot.press("y")
        await until(pilot, lambda: ("restart", ("parser",)) in handle.calls)


def with_failed_loop() -> Any:
    snap = demo_snapshot()
    loops = [
        dataclasses.replace(
            loop, state="failed", reason="max_iterations (6) reached", attention=False
        )
        if loop.name == "slugify"
        else loop
        for loop in snap.loops
    ]
    return dataclasses.replace(snap, loops=tuple(loops))


async def test_inbox_moves_with_j_and_k_and_p_on_a_failed_loop_offers_restart() -> None:
    app, handle = fixed_app(with_failed_loop())
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, InboxScreen))
        inbox = app.screen
        assert isinstance(inbox, InboxScreen)
        await until(pilot, lambda: inbox.selected is not None)
        first = inbox.selected
        await pilot.press("j")
        await pilot.pause(0.1)
        second = inbox.selected
        assert second != first
        await pilot.press("k")
        await pilot.pause(0.1)
        assert inbox.selected == first
        while inbox.selected != "slugify":
            await pilot.press("j")
        await pilot.press("p")
        await pilot.pause(0.2)
        assert not [c for c in handle.calls if c[0] in ("pause", "resume")]
        assert isinstance(app.screen, ConfirmScreen)
        assert "[y] Restart" in screen_text(app)
        await pilot.press("y")
        await until(pilot, lambda: ("restart", ("slugify",)) in handle.calls)


async def test_a_loop_that_succeeded_does_not_show_old_stuck_evidence() -> None:
    snap = demo_snapshot()
    loops = tuple(
        dataclasses.replace(loop, evidence="same_failure: same check failure 3× — old")
        if loop.name == "slugify"
        else loop
        for loop in snap.loops
    )
    app, _ = fixed_app(dataclasses.replace(snap, loops=loops))
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        main_of(app).focus_loop("slugify")
        await pilot.pause(0.2)
        title = main_of(app).title_bar.text
        assert title.startswith("slugify · sim (sim) · succeeded")
        assert "same check failure" not in title, title


# -- 4: resize keeps the selection ------------------------------------------------------
async def test_resizing_keeps_the_selected_loop() -> None:
    app, _ = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        main = main_of(app)
        await pilot.press("down", "down")
        chosen = main.table.focused_loop
        assert chosen == main.table.order[2]
        await pilot.resize_terminal(140, 40)
        await pilot.pause(0.3)
        assert main.table.focused_loop == chosen
        await pilot.resize_terminal(90, 24)
        await pilot.pause(0.3)
        assert main.table.focused_loop == chosen


# -- 5: finished loops stop the clock; the run says it is over ---------------------------
def quick_config(tmp_path: Path) -> Any:
    """One loop that succeeds in its first iteration (the sim says the done marker)."""
    return sim_config(
        tmp_path,
        loop("quick", "fast", max_iterations=3, done_marker="ALL DONE"),
        fast=sim_agent("fast", rate=0, reply_tokens=5, converge_after=1, done_text="ALL DONE"),
    )


async def test_a_finished_loops_time_stops(tmp_path: Path) -> None:
    sup = Supervisor(quick_config(tmp_path), exit_when_idle=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sup.run)
        await wait_for(lambda: sup.runners["quick"].state == "succeeded")
        first = (await sup.snapshot()).loops[0].elapsed_s
        later = time.time() + 1.1
        await wait_for(lambda: time.time() > later)
        assert (await sup.snapshot()).loops[0].elapsed_s == first
        await sup.shutdown()
    await sup.aclose()


async def test_the_console_says_when_the_run_is_over(tmp_path: Path) -> None:
    """Every loop ended: the header says "run finished · exit code 0 · …" although the
    local supervisor keeps running (a loop can be restarted)."""
    config = quick_config(tmp_path)
    sup = Supervisor(config, exit_when_idle=False)
    app = LoopvisorApp(sup, title="test", run_supervisor=sup.run)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: "run finished · exit code 0" in screen_text(app))
        assert re.search(r"run finished · exit code 0 · \S", screen_text(app))
        await pilot.press("q")
    await sup.aclose()


# -- 6: an attached console survives its server ------------------------------------------
async def test_attached_console_says_disconnected_and_reattaches_after_serve_resume(
    tmp_path: Path,
) -> None:
    """A real `serve --detach` daemon, the console attached as `loopvisor attach` builds
    it; the daemon is SIGKILLed: the status line says DISCONNECTED (not a stale
    "running"); `serve --resume` on the same state dir: the console reattaches by itself
    and shows the resumed run live again."""
    from supervisor.cli.console import attach_options
    from supervisor.control.client import RemoteSupervisor

    daemon = await anyio.to_thread.run_sync(start_daemon, tmp_path, sim_loops_toml())
    pids = [daemon.pid]
    try:
        async with RemoteSupervisor(daemon.socket, state_dir=daemon.state) as remote:
            app = LoopvisorApp(remote, **attach_options(remote))
            async with app.run_test(size=(100, 30)) as pilot:
                await settle(pilot)
                main = main_of(app)
                assert "DISCONNECTED" not in screen_text(app)
                os.kill(daemon.pid, signal.SIGKILL)
                await until(pilot, lambda: "DISCONNECTED" in screen_text(app))
                run_id = app.snapshot.run_id if app.snapshot else ""
                resumed = await anyio.to_thread.run_sync(daemon.resume)
                pids.append(resumed.pid)
                await until(pilot, lambda: "DISCONNECTED" not in screen_text(app), timeout=20)
                assert app.handle is not remote  # a new connection
                assert app.snapshot is not None
                assert app.snapshot.run_id == run_id  # the same run, resumed
                # live again: a loop's iteration count moves
                before = app.snapshot.loops[0].iteration
                await until(
                    pilot,
                    lambda: app.snapshot is not None and app.snapshot.loops[0].iteration > before,
                )
                assert main.table.order
                await pilot.press("q")  # detaches
    finally:
        for pid in pids:
            await anyio.to_thread.run_sync(kill_daemon, pid)


async def test_after_a_resume_a_finished_loop_keeps_its_check_and_time(tmp_path: Path) -> None:
    """Resumed, a loop that had succeeded shows its last check and its time (they were
    "—": the restored runner knew only its state)."""
    from supervisor.durable import durable_supervisor

    passing = {"name": "ok", "run": [PY, "-c", "pass"]}
    config = sim_config(
        tmp_path,
        loop("quick", "fast", max_iterations=3, done_marker="ALL DONE", checks=[passing]),
        endless_loop("slow"),
        fast=sim_agent("fast", rate=0, reply_tokens=5, converge_after=1, done_text="ALL DONE"),
    )
    async with durable_supervisor(config, exit_when_idle=False) as sup:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sup.run)
            await wait_for(lambda: sup.runners["quick"].state == "succeeded")
            before = sup.snapshot_now().loops[0]
            tg.cancel_scope.cancel()  # interrupted, as by Ctrl-C
        await sup.aclose()
    async with durable_supervisor(config, resume=True, exit_when_idle=False) as sup:
        after = sup.snapshot_now().loops[0]
        await sup.aclose()
    assert after.state == "succeeded"
    assert before.last_check == "1/1 passed"
    assert after.last_check == before.last_check
    assert after.last_check_passed is True
    assert after.started_at == pytest.approx(before.started_at, abs=0.01)
    assert after.elapsed_s == pytest.approx(before.elapsed_s, abs=0.1)


# -- 10: a line being streamed is shown once, whole ----------------------------------------
def streaming(tail: Any) -> str:
    """The line the core is streaming now ("" between lines)."""
    shown = tail.snapshot()
    return shown[-1].text if len(shown) > len(tail.lines) else ""


async def test_a_line_being_streamed_stays_one_line_through_attach_and_operator_actions(
    tmp_path: Path,
) -> None:
    """The console attaches (seeds from a snapshot) while the agent is mid-line, and the
    operator pauses the loop mid-line: the line still reads as one line, as in the core's
    transcript (it was cut in two: the snapshot's half line became a complete line, and
    the operator's line was put in the middle of it)."""
    config = sim_config(
        tmp_path,
        loop("half", "slowpoke", max_iterations=1, done_marker="NEVER-SAID"),
        slowpoke=sim_agent("slowpoke", rate=20, reply_tokens=40, converge_after=1_000_000),
    )
    sup = Supervisor(config, exit_when_idle=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sup.run)
        tail = sup.runners["half"].tail
        await wait_for(lambda: len(streaming(tail)) > 10)
        app = LoopvisorApp(sup, title="attached", detach_mode=True)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            half = streaming(tail)
            assert half  # still mid-line: the console was seeded with half a line
            main_of(app).focus_loop("half")
            await pilot.press("p")  # pause at the next safe point: the turn goes on
            await until(
                pilot, lambda: "» operator pause" in texts(app.transcripts.get("half").lines)
            )
            assert streaming(tail).startswith(half)  # still the same line
            await wait_for(lambda: not streaming(tail).startswith(half))
            whole = next(line.text for line in tail.lines if line.text.startswith(half))
            await until(pilot, lambda: whole in texts(app.transcripts.get("half").lines))
            lines = texts(app.transcripts.get("half").lines)
            assert half not in lines
            assert lines.index("» operator pause") < lines.index(whole)  # above, not inside
            await until(pilot, lambda: whole in texts(main_of(app).transcript.lines))
            await pilot.press("q")
        await sup.shutdown()
    await sup.aclose()


def test_inbox_hint_offers_what_p_does() -> None:
    """A failed loop's entry says `p restart`, a paused one's `p resume`."""
    from tui.screens.inbox import entry

    snap = with_failed_loop()
    by_name = {loop.name: loop for loop in snap.loops}
    assert "p restart" in entry(by_name["slugify"]).plain
    assert "p resume" not in entry(by_name["slugify"]).plain
    assert "p resume" in entry(by_name["greeter"]).plain
