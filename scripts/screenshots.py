"""Regenerate screenshots/*.svg from the real app running the shipped demo.

    .venv/bin/python scripts/screenshots.py [--out screenshots] [--size 120x34]

The demo (loops.toml + demo/) is copied to a temporary directory and run by a real
in-process Supervisor inside the real `LoopvisorApp` (headless, `App.run_test`),
driven by keys like an operator would:

- main.svg: mid-run: the stuck `parser` sorted first, `release-notes` streaming;
- inbox.svg: the attention inbox (`a`) with the stuck loop's evidence;
- edit.svg: the edit screen (`e`) on the stuck loop;
- chat.svg: step-in chat (`enter`) on the stuck loop, after one question.

Nothing is drawn by hand; timings differ a little between runs, so the pictures do.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from textual.pilot import Pilot  # noqa: E402

from supervisor.config.load import load_config  # noqa: E402
from supervisor.runtime import Supervisor  # noqa: E402
from tui.app import LoopvisorApp  # noqa: E402
from tui.screens.chat import ChatScreen  # noqa: E402
from tui.screens.edit import EditScreen  # noqa: E402
from tui.screens.inbox import InboxScreen  # noqa: E402


async def until(pilot: Pilot[int], predicate: Callable[[], object], timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise TimeoutError("the demo did not get there")
        await pilot.pause(0.05)


async def shoot(out: Path, size: tuple[int, int]) -> list[Path]:
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copy(ROOT / "loops.toml", work / "loops.toml")
        shutil.copytree(ROOT / "demo", work / "demo")
        config = load_config(work / "loops.toml", state_dir=work / ".loopvisor")
        supervisor = Supervisor(config, exit_when_idle=False)
        app = LoopvisorApp(
            supervisor, title="loopvisor · loops.toml", run_supervisor=supervisor.run
        )

        def save(name: str) -> None:
            app.save_screenshot(name, path=str(out))
            written.append(out / name)

        async with app.run_test(size=size) as pilot:
            main = app.main
            assert main is not None
            runners = supervisor.runners
            await until(pilot, lambda: runners["parser"].state == "stuck")
            await until(pilot, lambda: main.table.order[:1] == ["parser"])
            if runners["release-notes"].state in ("running", "checking", "waiting"):
                main.focus_loop("release-notes")
            await pilot.pause(0.6)
            save("main.svg")

            await pilot.press("a")
            await until(pilot, lambda: isinstance(app.screen, InboxScreen))
            await pilot.pause(0.3)
            save("inbox.svg")
            await pilot.press("escape")

            main.focus_loop("parser")
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, EditScreen))
            await pilot.pause(0.3)
            save("edit.svg")
            await pilot.press("escape")

            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, ChatScreen))
            await pilot.press(*"Why does test_compound keep failing?", "enter")
            chat = app.screen
            assert isinstance(chat, ChatScreen)
            await until(pilot, lambda: bool(chat.replies))
            await pilot.pause(0.5)
            save("chat.svg")

            await supervisor.shutdown()
            await until(pilot, lambda: app.run_done)
        await supervisor.aclose()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    parser.add_argument("--size", default="120x34", help="terminal WIDTHxHEIGHT")
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.lower().split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(shoot(args.out, (width, height))):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
