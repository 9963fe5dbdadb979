"""Bounded memory and disk whatever an agent prints, bounded prompts whatever is injected.

Attack (issue 10, item 6): 200 MB of agent stdout gave 543 MB RSS and a 204 MB
journal even with `--quiet`; 200 injects of 900 KB made a 180 MB prompt. These
tests run real agents (a shell pipeline through the command agent), the real CLI
in a subprocess, and read the real SQLite journal.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from helpers import (
    PY,
    REPO,
    Recorded,
    cli_env,
    command_agent,
    json_lines,
    load,
    loop,
    run_cli,
    run_recorded,
    sim_agent,
    table,
    wait_for,
    write_config,
)

from supervisor import events as ev
from supervisor.api import ControlError
from supervisor.control import protocol as proto
from supervisor.control.client import RemoteSupervisor
from supervisor.control.protocol import RemoteError
from supervisor.control.server import ControlServer
from supervisor.lines import texts
from supervisor.runtime import EXIT_USAGE, Supervisor
from supervisor.sizes import (
    INJECT_MAX_BYTES,
    NOTES_MAX_BYTES,
    OUTPUT_TAIL_BYTES,
    PROMPT_MAX_BYTES,
    PROMPT_TEMPLATE_MAX_BYTES,
)
from supervisor.transcript import TAIL_LINE_CHARS

MIB = 1024 * 1024
LINE = "x" * 999  # with its newline, 1,000 bytes a line


def spew_agent(name: str, nbytes: int, line: str = LINE) -> str:
    """A command agent printing `nbytes` bytes of `line` lines (yes | head -c)."""
    return table(
        f"agents.{name}", kind="command", command=["sh", "-c", f"yes {line} | head -c {nbytes}"]
    )


def spew_loop() -> str:
    return loop("spew", "spew", prompt="go", max_iterations=1, done_marker="NEVER")


def journal_events(state_dir: Path, kind: str) -> list[dict[str, object]]:
    with closing(sqlite3.connect(state_dir / "journal.sqlite3")) as conn:
        rows = conn.execute("SELECT json FROM events WHERE type = ?", (kind,)).fetchall()
    return [json.loads(r[0]) for r in rows]


MEASURE = """
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(proc.returncode, usage.ru_maxrss, usage.ru_utime + usage.ru_stime)
sys.stderr.write(proc.stderr.decode())
"""
"""Runs argv; prints its exit code, the peak RSS (KiB) and the CPU seconds of its process
tree. A wrapper of its own, so that no other child of the test process is counted."""


def measured_run(tmp_path: Path) -> tuple[float, float]:
    """`loopvisor run --headless --quiet` in tmp_path: (peak RSS in MiB, CPU seconds)."""
    argv = [PY, "-m", "supervisor", "run", "loops.toml", "--headless", "--quiet"]
    proc = subprocess.run(
        [PY, "-c", MEASURE, *argv],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    code, maxrss_kib, cpu_s = proc.stdout.split()
    assert code == "1", proc.stderr  # max_iterations reached: the marker is never seen
    return int(maxrss_kib) / 1024, float(cpu_s)


def test_a_flood_of_stdout_keeps_rss_and_journal_bounded(tmp_path: Path) -> None:
    flood = 64_000_000  # whole lines: the command agent ends a cut last line itself
    write_config(tmp_path, spew_agent("spew", flood), spew_loop())
    peak_mib, _ = measured_run(tmp_path)
    journal = sum(p.stat().st_size for p in (tmp_path / ".loopvisor").glob("journal.sqlite3*"))
    assert peak_mib < 100, f"peak RSS {peak_mib:.0f} MiB for {flood:,} bytes of output"
    assert journal < 4 * MIB + OUTPUT_TAIL_BYTES + MIB, f"journal {journal:,} bytes"
    (marker,) = journal_events(tmp_path / ".loopvisor", "output_truncated")
    shown = sum(
        len(str(e["text"]).encode()) for e in journal_events(tmp_path / ".loopvisor", "output")
    )
    assert marker["iteration"] == 1
    assert marker["limit"] == 4 * MIB
    assert shown + int(str(marker["dropped"])) == flood  # every byte kept or counted


def test_millions_of_short_lines_cost_little_cpu(tmp_path: Path) -> None:
    """2 MB of one-character lines is a million lines: read per pipe read, not re-sliced
    per line (which made the reader quadratic: ~9 s of CPU here, 46 s for 10 MB)."""
    write_config(tmp_path, spew_agent("spew", 2_000_000, line="x"), spew_loop())
    _, cpu_s = measured_run(tmp_path)
    assert cpu_s < 5.0, f"{cpu_s:.1f} s of CPU for a million short lines"


def test_the_json_stream_shows_the_cut_and_counts_every_byte(tmp_path: Path) -> None:
    flood, cap = 2_000_000, 200_000
    write_config(
        tmp_path,
        table("supervisor", max_output_per_iteration=cap),
        spew_agent("spew", flood),
        spew_loop(),
    )
    proc = run_cli("run", "loops.toml", "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = json_lines(proc.stdout)
    shown = sum(len(e["text"].encode()) for e in lines if e["type"] == "output")
    cuts = [e for e in lines if e["type"] == "output_truncated"]
    assert len(cuts) == 1, cuts
    assert cuts[0]["limit"] == cap
    assert shown + cuts[0]["dropped"] == flood
    assert shown <= cap + OUTPUT_TAIL_BYTES + 8192
    # said live when the limit is reached, before the count is known
    (live,) = [e for e in lines if e["type"] == "notice" and "per-iteration" in e["message"]]
    assert lines.index(live) < lines.index(cuts[0])
    # the end of what the agent printed survives the cut: it comes after the marker
    after = [e for e in lines[lines.index(cuts[0]) :] if e["type"] == "output"]
    assert sum(len(e["text"]) for e in after) >= OUTPUT_TAIL_BYTES // 2


def test_the_history_transcript_shows_the_marker(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        table("supervisor", max_output_per_iteration=50_000),
        spew_agent("spew", 500_000),
        spew_loop(),
    )
    assert run_cli("run", "loops.toml", "--headless", "--quiet", cwd=tmp_path).returncode == 1
    proc = run_cli("history", "spew", "--iteration", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "output truncated" in proc.stdout
    assert "bytes dropped" in proc.stdout


def test_a_bad_output_cap_is_a_config_error(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        table("supervisor", max_output_per_iteration=0),
        spew_agent("spew", 10),
        spew_loop(),
    )
    proc = run_cli("check", "loops.toml", cwd=tmp_path)
    assert proc.returncode == 3
    assert "max_output_per_iteration" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.anyio
async def test_one_endless_line_is_kept_as_a_bounded_tail(tmp_path: Path) -> None:
    """No newline at all: the live transcript and $last_output stay bounded."""
    config = load(
        tmp_path,
        table("supervisor", max_output_per_iteration=100_000),
        table(
            "agents.spew",
            kind="command",
            command=["sh", "-c", "yes | tr -d '\\n' | head -c 3000000"],
        ),
        spew_loop(),
    )
    rec = await run_recorded(config)
    runner = rec.supervisor.runners["spew"]
    tail = texts(runner.tail.snapshot())
    assert all(len(line) <= TAIL_LINE_CHARS for line in tail)
    assert sum(len(line) for line in tail) < 2 * 100_000 + OUTPUT_TAIL_BYTES
    assert any("output truncated" in line for line in tail)
    assert len(runner.last_output) <= 64 * 1024
    (cut,) = rec.of(ev.OutputTruncated, "spew")
    shown = sum(len(e.text.encode()) for e in rec.of(ev.AgentOutput, "spew"))
    pieces = 3_000_000 // (64 * 1024) + 1  # the pipe reader ends each 64 KiB piece with \n
    assert 3_000_000 <= shown + cut.dropped <= 3_000_000 + pieces


def test_the_consoles_transcript_keeps_an_endless_line_bounded() -> None:
    from tui.model import LoopLines

    lines = LoopLines()
    for _ in range(256):  # 1 MiB without a newline, in the chunks the core publishes
        lines.add("y" * 4096, "stdout")
    partial = lines.partial.text if lines.partial else ""
    assert len(partial) <= TAIL_LINE_CHARS
    assert all(len(line) <= TAIL_LINE_CHARS for line in texts(lines.lines))
    assert sum(map(len, texts(lines.lines))) + len(partial) >= MIB  # wrapped, not lost


def test_an_endless_claude_reply_keeps_a_bounded_last_text() -> None:
    """Claude Code's parser keeps the last message's text as the turn's output: its
    tail only, however long the reply streams."""
    from supervisor.agents.stream_json import LAST_TEXT_KEEP, StreamJsonParser

    fixture = REPO / "tests" / "data" / "stream_json" / "partial_messages.jsonl"
    lines = fixture.read_text().splitlines()
    first_delta = next(i for i, line in enumerate(lines) if "text_delta" in line)
    parser = StreamJsonParser()
    for line in lines[:first_delta]:
        parser.feed(line)
    delta = json.loads(lines[first_delta])
    delta["event"]["delta"]["text"] = "z" * 999 + "\n"
    flood = json.dumps(delta)
    for _ in range(2000):  # 2 MB of one reply
        parser.feed(flood)
    assert len(parser.last_text) == LAST_TEXT_KEEP  # was the whole 2 MB
    assert parser.last_text.endswith("z\n")


# -- injects, edits and prompts ------------------------------------------------------
def paused_config(tmp_path: Path, prompt: str = "Fix it. $check_output") -> str:
    (tmp_path / "w").mkdir(exist_ok=True)
    return loop("slow", "s", prompt=prompt, workspace="w", done_marker="NEVER", max_iterations=3)


@pytest.mark.anyio
async def test_an_inject_over_the_limit_is_refused_with_its_size(tmp_path: Path) -> None:
    config = load(tmp_path, sim_agent("s"), paused_config(tmp_path))
    big = "x" * (2 * MIB)
    refused: list[str] = []

    async def during(rec: Recorded) -> None:
        sup = rec.supervisor
        await sup.pause("slow")
        with pytest.raises(ControlError) as info:
            await sup.inject("slow", big)
        refused.append(str(info.value))
        await sup.stop("slow")

    await run_recorded(config, exit_when_idle=False, during=during)
    (message,) = refused
    assert "2 MiB" in message
    assert f"{INJECT_MAX_BYTES // 1024} KiB" in message


@pytest.mark.anyio
async def test_accumulated_injects_cannot_grow_the_prompt_past_the_limit(
    tmp_path: Path,
) -> None:
    config = load(tmp_path, sim_agent("s", rate=50), paused_config(tmp_path))
    note = "n" * (INJECT_MAX_BYTES - 100)
    accepted: list[str] = []
    refused: list[str] = []

    async def during(rec: Recorded) -> None:
        sup = rec.supervisor
        await wait_for(lambda: sup.runners["slow"].state == "running")
        await sup.pause("slow")
        for i in range(NOTES_MAX_BYTES // INJECT_MAX_BYTES + 3):
            try:
                await sup.inject("slow", f"{i}:{note}")
                accepted.append(str(i))
            except ControlError as exc:
                refused.append(str(exc))
        await sup.resume("slow")
        await wait_for(lambda: sup.runners["slow"].iteration >= 2)
        await sup.stop("slow")

    rec = await run_recorded(config, exit_when_idle=False, during=during, timeout=30)
    assert refused, "every inject was accepted"
    assert "pending operator notes" in refused[0]
    assert f"{NOTES_MAX_BYTES // 1024} KiB" in refused[0]
    prompts = [e.prompt for e in rec.of(ev.IterationStarted, "slow")]
    second = prompts[1]
    assert len(second.encode()) <= PROMPT_MAX_BYTES
    for i in accepted:  # nothing accepted is lost
        assert f"Operator note: {i}:" in second


@pytest.mark.anyio
async def test_an_edit_with_a_huge_prompt_is_refused(tmp_path: Path) -> None:
    config = load(tmp_path, sim_agent("s"), paused_config(tmp_path))
    refused: list[str] = []

    async def during(rec: Recorded) -> None:
        sup = rec.supervisor
        with pytest.raises(ControlError) as info:
            await sup.edit("slow", prompt="p" * (PROMPT_TEMPLATE_MAX_BYTES + 1))
        refused.append(str(info.value))
        await sup.stop("slow")

    await run_recorded(config, exit_when_idle=False, during=during)
    (message,) = refused
    assert "prompt" in message
    assert f"{PROMPT_TEMPLATE_MAX_BYTES // 1024} KiB" in message


class _Recorder:
    """Stands in for the socket client: records what `ctl` would have sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []

    async def inject(self, loop: str, text: str) -> None:
        self.sent.append(("inject", len(text)))

    async def edit(self, loop: str, **changes: object) -> None:
        self.sent.append(("edit", changes))


@pytest.mark.anyio
async def test_ctl_reads_stdin_and_prompt_files_no_further_than_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ctl inject LOOP -` and `ctl edit --prompt-file F` read at most the limit (a pipe
    from /dev/zero must not fill ctl's memory) and say which limit was passed."""
    import argparse
    import io

    from supervisor.cli import remote as cli_remote

    piped = io.BytesIO(b"x" * (2 * MIB))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(piped, encoding="utf-8"))
    remote = _Recorder()
    inject = argparse.Namespace(action="inject", loop="slow", text="-", json=True)
    # stdin is read before connecting (a person may type for longer than the handshake):
    # refused there, with no server needed and nothing sent.
    code = await cli_remote._ctl(inject, tmp_path / "nobody.sock", None)
    assert code == EXIT_USAGE
    assert f"{INJECT_MAX_BYTES // 1024} KiB" in capsys.readouterr().out
    assert piped.tell() == INJECT_MAX_BYTES + 1
    big = tmp_path / "prompt.md"
    big.write_bytes(b"p" * (PROMPT_TEMPLATE_MAX_BYTES + 1))
    edit = argparse.Namespace(
        loop="slow", prompt=None, prompt_file=big, max_iterations=None, json=False,
        tokens=None, usd=None, wall=None, cpu=None,
    )  # fmt: skip
    with pytest.raises(cli_remote.UsageError, match=f"{PROMPT_TEMPLATE_MAX_BYTES // 1024} KiB"):
        await cli_remote._edit(remote, edit)  # type: ignore[arg-type]  # a recorder stands in
    assert remote.sent == []


def test_a_huge_prompt_in_the_config_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    write_config(
        tmp_path,
        sim_agent("s"),
        paused_config(tmp_path, prompt="p" * (PROMPT_TEMPLATE_MAX_BYTES + 1)),
    )
    proc = run_cli("check", "loops.toml", cwd=tmp_path)
    assert proc.returncode == 3
    assert f"{PROMPT_TEMPLATE_MAX_BYTES // 1024} KiB" in proc.stderr + proc.stdout


def test_a_huge_prompt_file_is_a_config_error_read_no_further(tmp_path: Path) -> None:
    """Read up to the limit and no further (a prompt_file of /dev/zero must not hang)."""
    (tmp_path / "w").mkdir()
    (tmp_path / "big.md").write_text("p" * (PROMPT_TEMPLATE_MAX_BYTES + 1))
    config = write_config(tmp_path, sim_agent("s"), paused_config(tmp_path, prompt="x"))
    text = config.read_text().replace('prompt = "x"', 'prompt_file = "big.md"')
    config.write_text(text)
    proc = run_cli("check", "loops.toml", cwd=tmp_path)
    assert proc.returncode == 3, proc.stdout
    assert "big.md" in proc.stderr
    assert f"{PROMPT_TEMPLATE_MAX_BYTES // 1024} KiB" in proc.stderr


@pytest.mark.anyio
async def test_placeholders_cannot_blow_a_prompt_up(tmp_path: Path) -> None:
    """A small template repeating $check_output 400 times renders 400 times the check's
    output (up to 4,000 characters): the loop fails with the size; no such prompt is sent."""
    (tmp_path / "w").mkdir()
    check = {"name": "loud", "run": [PY, "-c", "print('e' * 60000); raise SystemExit(1)"]}
    config = load(
        tmp_path,
        command_agent("c", "print('hi')"),
        loop(
            "blowup",
            "c",
            prompt="$check_output " * 400,
            workspace="w",
            checks=[check],
            max_iterations=3,
        ),
    )
    rec = await run_recorded(config)
    result = rec.result("blowup")
    assert result.state == "failed"
    assert "prompt" in result.reason
    assert f"{PROMPT_MAX_BYTES // MIB} MiB" in result.reason
    assert all(len(e.prompt.encode()) <= PROMPT_MAX_BYTES for e in rec.of(ev.IterationStarted))


@pytest.mark.anyio
async def test_over_the_socket_an_oversized_inject_is_refused_not_lost(tmp_path: Path) -> None:
    """`ctl inject` / attach: an inject over the limit gets the server's error; one too
    big for a request line (which the server skips unanswered) fails at once, instead
    of waiting forever for an answer."""
    config = load(tmp_path, sim_agent("s"), paused_config(tmp_path))
    sock = tmp_path / "run" / "control.sock"
    sup = Supervisor(config, exit_when_idle=False)
    server = ControlServer(sup, sock)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sup.run)
            await tg.start(server.serve)
            async with RemoteSupervisor(sock) as remote:
                await remote.pause("slow")
                with anyio.fail_after(5), pytest.raises(RemoteError) as over_limit:
                    await remote.inject("slow", "x" * (INJECT_MAX_BYTES + 1))
                with anyio.fail_after(5), pytest.raises(RemoteError) as over_frame:
                    await remote.inject("slow", "x" * (2 * MIB))
                await remote.inject("slow", "a note that fits")  # still answered
            assert sup.runners["slow"].control.injections == ["a note that fits"]
            tg.cancel_scope.cancel()
    finally:
        await sup.aclose()
    assert f"{INJECT_MAX_BYTES // 1024} KiB" in str(over_limit.value)
    assert "2.0 MiB" in str(over_frame.value)
    assert f"{proto.MAX_REQUEST_LINE // MIB} MiB" in str(over_frame.value)
