"""The output coalescer's timer sleeps only while it holds text (issue 12): whole
pipe reads are flushed as they come, so 50 command turns no longer wake 20 times a
second each for nothing."""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import pytest

from supervisor import transcript


@pytest.mark.anyio
async def test_the_coalescer_sleeps_only_while_it_holds_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whole pipe reads are flushed as they come: the flusher has nothing to wait
    for (it woke 20 times a second per turn); a held delta still goes within the
    interval."""
    emitted: list[str] = []
    eleven = anyio.Event()

    def emit(text: str, _stream: str) -> None:
        emitted.append(text)
        if len(emitted) == 11:
            eleven.set()

    coalescer = transcript.OutputCoalescer(emit, clock=time.monotonic, interval=0.01)
    sleeps: list[float] = []
    real_sleep = anyio.sleep

    async def counted(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(delay)

    monkeypatch.setattr(anyio, "sleep", counted)
    async with anyio.create_task_group() as tg:
        tg.start_soon(coalescer.run_flusher)
        for i in range(10):
            coalescer.add(f"{i}" * transcript.MAX_CHUNK, "stdout")
            await anyio.lowlevel.checkpoint()
        assert len(emitted) == 10
        assert sleeps == []
        coalescer.add("a token", "assistant")
        with anyio.fail_after(10):
            await eleven.wait()
        assert emitted[-1] == "a token"
        assert sleeps[:1] == [0.01]  # (then one quiet interval, and it waits again)
        assert len(sleeps) <= 2
        tg.cancel_scope.cancel()
