"""The console over a handle it does not run (the attach path: in-process, and over the
real control socket), scroll-back from `handle.transcript()`, notifications, and the
Claude Code step-in fallback where the terminal cannot be handed over."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import pytest
from console_support import demo_snapshot, endless_loop, fixed_app, sim_config
from helpers import sim_agent, wait_for

from supervisor import events as ev
from supervisor.api import StepIn
from supervisor.runtime import Supervisor
from tui.app import LoopvisorApp

pytestmark = pytest.mark.anyio


async def test_attached_app_observes_and_controls_and_q_detaches(tmp_path: Path) -> None:
    """The attach path: no `run_supervisor`, the supervisor runs elsewhere (here in the
    test's task group); the same screens show it and control it, and `q` leaves it
    running."""
    config = sim_config(tmp_path, endless_loop("alpha"), endless_loop("beta"))
    sup = Supervisor(config, exit_when_idle=False)
    events: list[ev.Event] = []
    sup.add_sink(events.append)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sup.run)
        app = LoopvisorApp(sup, title="attached", detach_mode=True)
        async with app.run_test(size=(80, 24)) as pilot:
            main = app.main
            assert main is not None
            with anyio.fail_after(10):
                while len(main.table.order) < 2 or not main.transcript.lines:
                    await pilot.pause(0.05)
            main.focus_loop("beta")
            await pilot.press("p")
            with anyio.fail_after(10):
                while sup.runners["beta"].state != "paused":
                    await pilot.pause(0.05)
            await pilot.press("q")
            await pilot.pause(0.2)
            assert not app.is_running

        def alpha_started() -> int:
            return sum(isinstance(e, ev.IterationStarted) and e.loop == "alpha" for e in events)

        count = alpha_started()
        await wait_for(lambda: alpha_started() > count)
        assert not sup._finished  # detaching left the run going
        await sup.shutdown()
    await sup.aclose()


async def test_scrolling_to_the_top_loads_older_lines_from_the_handle(tmp_path: Path) -> None:
    """The console starts from a snapshot's tail (200 lines); scrolled to the top, the
    transcript asks `handle.transcript()` for what came before, without a jump."""
    quick = sim_agent("quick", rate=0, reply_tokens=5, converge_after=1_000_000)
    config = sim_config(tmp_path, endless_loop("alpha", "quick"), quick=quick)
    sup = Supervisor(config, exit_when_idle=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sup.run)
        await wait_for(lambda: len(sup.runners["alpha"].tail.lines) >= 380, timeout=30)
        await sup.pause("alpha")
        await wait_for(lambda: sup.runners["alpha"].state == "paused")
        app = LoopvisorApp(sup, title="attached", detach_mode=True)
        async with app.run_test(size=(100, 30)) as pilot:
            main = app.main
            assert main is not None
            view = main.transcript
            with anyio.fail_after(10):
                while view.source != "alpha" or not view.lines:
                    await pilot.pause(0.05)
            seeded = list(view.lines)
            assert len(seeded) <= 201
            view.focus()
            await pilot.press("home")
            with anyio.fail_after(10):
                while len(view.lines) <= len(seeded):
                    await pilot.pause(0.05)
            assert view.lines[-len(seeded) :] == seeded  # older lines went in front
            assert view.scroll_y > 0  # the rows in view stayed in view
            await pilot.press("q")
        await sup.shutdown()
    await sup.aclose()


async def test_the_same_app_attached_over_the_control_socket(tmp_path: Path) -> None:
    """`loopvisor attach`'s path: the app over a `RemoteSupervisor` (no local run):
    it shows the live run, its keys reach the server, and `q` detaches while the
    server's loops keep going."""
    from supervisor.control.client import RemoteSupervisor
    from supervisor.control.server import ControlServer

    config = sim_config(tmp_path, endless_loop("alpha"), endless_loop("beta"))
    sup = Supervisor(config, exit_when_idle=False)
    events: list[ev.Event] = []
    sup.add_sink(events.append)
    sock = tmp_path / "run" / "control.sock"
    server = ControlServer(sup, sock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sup.run)
        await tg.start(server.serve)
        async with RemoteSupervisor(sock) as remote:
            app = LoopvisorApp(remote, title="attached", detach_mode=True)
            async with app.run_test(size=(100, 30)) as pilot:
                main = app.main
                assert main is not None
                with anyio.fail_after(10):
                    while len(main.table.order) < 2 or len(main.transcript.lines) < 3:
                        await pilot.pause(0.05)
                main.focus_loop("beta")
                await pilot.press("p")
                with anyio.fail_after(10):
                    while sup.runners["beta"].state != "paused":
                        await pilot.pause(0.05)
                with anyio.fail_after(10):
                    while str(main.table.get_cell("beta", "state")) != "paused":
                        await pilot.pause(0.05)
                await pilot.press("ctrl+d")
                await pilot.pause(0.2)
                assert not app.is_running

        def alpha_started() -> int:
            return sum(isinstance(e, ev.IterationStarted) and e.loop == "alpha" for e in events)

        count = alpha_started()
        await wait_for(lambda: alpha_started() > count)
        await sup.shutdown()
        tg.cancel_scope.cancel()
    await sup.aclose()


async def test_step_in_where_the_terminal_cannot_be_handed_over_says_what_to_run() -> None:
    """Claude Code step-in under a driver that cannot suspend (tests, web): the loop
    stays paused and the operator is told the exact command (FixedHandle stands in
    for a claude-code loop, which needs the real CLI)."""
    info = StepIn(
        loop="parser",
        agent_kind="claude-code",
        workspace="/tmp/ws",
        session_id="abc",
        resume_argv=("claude", "--resume", "abc"),
        chat=False,
    )
    app, handle = fixed_app(step_in=info)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause(0.3)
        main = app.main
        assert main is not None
        main.focus_loop("parser")
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert ("step_in", ("parser",)) in handle.calls
        assert ("hand_back", ("parser",)) not in handle.calls
        messages = [n.message for n in app._notifications]
        assert any("claude --resume abc" in m and "/tmp/ws" in m for m in messages)


async def test_warnings_near_exhaustion_cost_spikes_and_budget_events_notify() -> None:
    """Global near-exhaustion (from the snapshot and from the core's BudgetWarning),
    cost spikes and a loop's overshoot notify; a loop merely at 85% of its own budget
    is a line in its transcript, not a toast (64 loops would bury the screen)."""
    snap = demo_snapshot()
    hot = dataclasses.replace(snap.budget, tokens=50_000)  # 83% of 60k
    events = (
        ev.StuckDetected(
            loop="fizzbuzz",
            iteration=3,
            detector="cost_spike",
            evidence="iteration cost $0.40, 8× its median",
            action="continue",
        ),
        ev.BudgetWarning(
            scope="global",
            dimension="usd",
            used=0.96,
            limit=1.0,
            message="global usd budget 95% spent: $0.9600 of $1.00",
        ),
        ev.BudgetWarning(
            scope="release-notes",
            dimension="tokens",
            used=1_700,
            limit=2_000,
            message="loop 'release-notes' tokens budget 80% spent: 1,700 of 2,000 tokens",
        ),
        ev.BudgetWarning(
            scope="greeter",
            dimension="tokens",
            used=2_300,
            limit=2_000,
            message="loop 'greeter' tokens budget overshot: 2,300 of 2,000 tokens",
        ),
    )
    app, _ = fixed_app(dataclasses.replace(snap, budget=hot), events=events)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause(0.5)
        notes = {(n.title, n.message) for n in app._notifications}
        assert ("budget nearly used up", "global tokens budget at 83%") in notes
        assert ("cost spike", "fizzbuzz: iteration cost $0.40, 8× its median → continue") in notes
        assert ("budget nearly used up", "global usd budget 95% spent: $0.9600 of $1.00") in notes
        assert (
            "budget used up",
            "loop 'greeter' tokens budget overshot: 2,300 of 2,000 tokens",
        ) in notes
        assert not any("release-notes" in message for _, message in notes)
        lines = app.transcripts.get("release-notes").lines
        assert any("80% spent" in line.text for line in lines)
        await pilot.pause(0.6)  # more snapshots: warned once, not on every refresh
        assert sum("global tokens" in n.message for n in app._notifications) == 1
        assert sum("USD budget at" in n.message for n in app._notifications) == 0  # seen
