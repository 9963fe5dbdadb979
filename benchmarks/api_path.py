"""API path: the anthropic agent under loopvisor against the raw SDK, same streams.

A fake Messages API (`tests/fake_anthropic.py`, real HTTP + SSE on 127.0.0.1, one
delta per word) runs in this process and answers every request with the same
W-word text. Two children are measured, back to back, by their own CPU (the
server's is this process's and counts for neither):

* raw SDK (the baseline): this file with `--raw`, N concurrent
  `AsyncAnthropic.messages.stream(...)` calls, each iterating its events and
  taking the final message: the least any client of the API must do;
* loopvisor: `loopvisor run --json` on N loops of one `kind = "anthropic"` agent
  (no tools, one iteration, done when the reply's last word is seen): the same
  requests plus what supervision adds (count_tokens for the reservation,
  budget ledger, journal, JSON lines, metering).

Figures: CPU of each (median of `--repeat`), ratio (target <= 1.1x), and the ratio
with each side's startup removed (a run with N = 1 and a 1-word reply), which is
the cost per streamed token. Prints one JSON object (see `_common.emit`). Run:
`.venv/bin/python benchmarks/api_path.py` (`--loops N`, `--words W`, `--quick`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import LOOPVISOR, ROOT, emit, machine, measure, median, metric

MODEL = "claude-sonnet-4-5"
DONE = "FINISHED"


async def _raw(loops: int, base_url: str) -> None:
    import anyio
    from anthropic import AsyncAnthropic

    client = AsyncAnthropic(base_url=base_url, api_key="sk-bench", max_retries=0)

    async def one(i: int) -> None:
        async with client.messages.stream(
            model=MODEL,
            max_tokens=8000,
            messages=[{"role": "user", "content": f"loop {i}: talk"}],
        ) as stream:
            parts = [text async for text in stream.text_stream]
            message = await stream.get_final_message()
        assert DONE in "".join(parts)
        assert message.usage.output_tokens > 0

    async with anyio.create_task_group() as tg:
        for i in range(loops):
            tg.start_soon(one, i)
    await client.close()


def loops_toml(loops: int, base_url: str) -> str:
    parts = [
        "[supervisor]",
        f"max_concurrent = {loops}",
        "[agents.api]",
        'kind = "anthropic"',
        f'model = "{MODEL}"',
        "max_tokens = 8000",
        "tools = []",
        f'base_url = "{base_url}"',
    ]
    for i in range(loops):
        parts += [
            "[[loop]]",
            f'name = "api{i:03d}"',
            'agent = "api"',
            f'prompt = "loop {i}: talk"',
            "max_iterations = 1",
            f'done_marker = "{DONE}"',
            "stuck = { stall = false }",
        ]
    return "\n".join(parts) + "\n"


def once(loops: int, words: int) -> dict[str, Any]:
    if str(ROOT / "tests") not in sys.path:
        sys.path.append(str(ROOT / "tests"))  # the fake lives with the tests
    from fake_anthropic import FakeAnthropic, text

    reply = text(" ".join(["token"] * (words - 1) + [DONE]))
    env = {"ANTHROPIC_API_KEY": "sk-bench", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    with FakeAnthropic(default=reply) as server, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        me = str(Path(__file__).resolve())
        raw = measure([me, "--raw", str(loops), server.base_url], root, env=env, ok_codes=(0,))
        raw_tokens = server.totals.output_tokens
        (root / "loops.toml").write_text(loops_toml(loops, server.base_url))
        lv = measure(
            [*LOOPVISOR, "run", "loops.toml", "--json", "--state-dir", str(root / "state")],
            root,
            env=env,
            stdout=root / "events.jsonl",
            ok_codes=(0,),
        )
        lv_tokens = server.totals.output_tokens - raw_tokens
        requests = [r.path for r in server.requests]
    return {
        "raw": {**raw, "output_tokens": raw_tokens},
        "loopvisor": {**lv, "output_tokens": lv_tokens},
        "requests_raw_and_loopvisor": {p: requests.count(p) for p in sorted(set(requests))},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller, once: < 60 s")
    parser.add_argument("--loops", type=int, help="concurrent loops / streams (20, quick 10)")
    parser.add_argument("--words", type=int, help="words (= deltas) per reply (3000, quick 1000)")
    parser.add_argument("--repeat", type=int, help="runs (default 3, quick 1)")
    parser.add_argument("--raw", nargs=2, metavar=("LOOPS", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw:
        import anyio

        anyio.run(_raw, int(args.raw[0]), args.raw[1])
        return
    loops = args.loops or (10 if args.quick else 20)
    words = args.words or (1000 if args.quick else 3000)
    repeat = args.repeat or (1 if args.quick else 3)
    started = machine()
    startup = once(1, 1)
    runs = [once(loops, words) for _ in range(repeat)]
    raw = median([r["raw"]["cpu_s"] for r in runs])
    lv = median([r["loopvisor"]["cpu_s"] for r in runs])
    raw0, lv0 = startup["raw"]["cpu_s"], startup["loopvisor"]["cpu_s"]
    tokens = loops * words
    metrics = [
        metric(f"api{loops}x{words}_cpu", lv, "s", baseline=raw, target="<= 1.1x"),
        metric(f"api{loops}x{words}_cpu_startup_corrected", lv - lv0, "s", baseline=raw - raw0),
        metric(
            f"api{loops}x{words}_cpu_per_token",
            (lv - lv0) / tokens * 1e6,
            "us",
            baseline=(raw - raw0) / tokens * 1e6,
        ),
        metric(
            f"api{loops}x{words}_wall",
            median([r["loopvisor"]["wall_s"] for r in runs]),
            "s",
            baseline=median([r["raw"]["wall_s"] for r in runs]),
        ),
        metric("startup_cpu", lv0, "s", baseline=raw0),
    ]
    details = {"loops": loops, "words": words, "startup": startup, "runs": runs}
    default = args.loops is None and args.words is None
    emit("api_path", started, metrics, details, save=default)


if __name__ == "__main__":
    main()
