"""The notifier as a bus sink, in process, against a webhook on 127.0.0.1: a burst is
one message, a failing channel is said once (and again when it works), a full queue
drops instead of waiting, and a hanging webhook never holds the sink."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from helpers import load, loop, sim_agent, table
from webhook_support import webhook

from supervisor import events as ev
from supervisor.notify import notifier as notifier_module
from supervisor.notify.channels import Children
from supervisor.notify.notifier import Notifier

pytestmark = pytest.mark.anyio


def make(tmp_path: Path, url: str, **notify: object) -> tuple[Notifier, list[tuple[str, str]]]:
    notify.setdefault("retries", 0)
    config = load(
        tmp_path,
        table("notify", webhook=url, **notify),
        sim_agent("s"),
        loop("a", "s", done_marker="D", workspace="."),
    )
    notices: list[tuple[str, str]] = []
    notifier = Notifier(
        config,
        run_id="r1",
        notice=lambda message, level: notices.append((level, message)),
        children=Children(cwd=tmp_path, env={}),
        host="testhost",
    )
    return notifier, notices


def exhausted(name: str) -> ev.LoopStateChanged:
    return ev.LoopStateChanged(loop=name, state="exhausted", reason="global usd budget used up")


async def test_a_burst_is_one_message(tmp_path: Path) -> None:
    with webhook() as hook:
        notifier, _ = make(tmp_path, hook.url, coalesce=30)
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.run)
            for i in range(20):
                notifier.record(exhausted(f"l{i}"))
            await notifier.drain(10)  # ends the 30 s window at once
            tg.cancel_scope.cancel()
        docs = hook.documents()
    assert len(docs) == 1
    assert docs[0]["count"] == 20
    assert docs[0]["text"].startswith("20 × budget exhausted: l0, l1, ")
    assert "(+12 more): global usd budget used up" in docs[0]["text"]


async def test_a_failing_channel_is_said_once_and_again_when_it_works(tmp_path: Path) -> None:
    with webhook("fail") as hook:
        notifier, notices = make(tmp_path, hook.url, coalesce=0.05)
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.run)
            for name in ("x", "y", "z"):
                notifier.record(ev.LoopStateChanged(loop=name, state="failed", reason="boom"))
                await notifier.drain(10)
            hook.mode = "ok"
            notifier.record(ev.LoopStateChanged(loop="w", state="failed", reason="boom"))
            await notifier.drain(10)
            tg.cancel_scope.cancel()
        assert len(hook.requests) == 4
    assert notices == [
        (
            "warning",
            "notification by webhook (json) to 127.0.0.1 failed after 1 attempt(s): HTTP 500"
            " (further failures of it are not shown)",
        ),
        ("info", "notifications by webhook (json) to 127.0.0.1 are delivered again"),
    ]


async def test_retries_back_off_then_deliver(tmp_path: Path) -> None:
    """Two failures, then success: three attempts, the waits doubling."""
    waits: list[float] = []
    with webhook("fail") as hook:
        notifier, notices = make(tmp_path, hook.url, retries=3, coalesce=0.05)

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            if len(waits) == 2:
                hook.mode = "ok"

        notifier._sleep = sleep
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.run)
            notifier.record(ev.LoopStateChanged(loop="a", state="failed", reason="boom"))
            await notifier.drain(10)
            tg.cancel_scope.cancel()
        assert len(hook.requests) == 3
    assert waits == [1.0, 2.0]
    assert notices == []


async def test_a_full_queue_drops_instead_of_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notifier_module, "QUEUE_MAX", 3)
    with webhook() as hook:
        notifier, notices = make(tmp_path, hook.url, coalesce=30)
        for i in range(5):  # no delivery task yet: nothing is taken off the queue
            notifier.record(exhausted(f"l{i}"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.run)
            await notifier.drain(10)
            tg.cancel_scope.cancel()
        docs = hook.documents()
    assert [d["count"] for d in docs] == [3]
    assert notices == [("warning", "notifications: 2 alert(s) dropped (queue full)")]


async def test_a_hanging_webhook_never_holds_the_sink(tmp_path: Path) -> None:
    with webhook("hang") as hook:
        notifier, _ = make(tmp_path, hook.url, coalesce=0.01, timeout=30)
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.run)
            notifier.record(exhausted("a"))
            await anyio.to_thread.run_sync(hook.wait_for, 1)  # now hanging
            for i in range(50):  # record() returns at once, the delivery task hangs
                notifier.record(exhausted(f"b{i}"))
            assert len(notifier._queue) == 50
            hook.mode = "ok"
            hook.released.set()
            await notifier.drain(20)
            tg.cancel_scope.cancel()
        docs = hook.documents()
    assert [d["count"] for d in docs] == [1, 50]
