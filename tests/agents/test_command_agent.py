"""The `command` agent: real child processes, argv without a shell, process groups."""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    GRANDCHILD_SCRIPT,
    agent_events,
    command_agent,
    load,
    loop,
    read_pids,
    run_recorded,
    supervisor_table,
    wait_gone,
)

from supervisor import events as ev
from supervisor.agents.base import AgentEvent, AgentFailed, AgentRequest, Done, TextDelta, Usage
from supervisor.agents.command import CommandAgent
from supervisor.agents.kinds.command import CommandAgentSpec
from supervisor.budget import Ledger
from supervisor.spec import Limits, LoopSpec
from supervisor.turn_budget import LedgerTurnBudget

pytestmark = pytest.mark.anyio

NASTY = (
    "fix it $(touch pwned); rm -rf keep `touch pwned2` && echo $HOME | cat > out 'q' \"dq\"\n2nd"
)


def agent(tmp_path: Path, script: str, *args: str, **fields: Any) -> CommandAgent:
    spec = CommandAgentSpec(
        name="cmd",
        command=(sys.executable, "-c", script, *args),
        **fields,
    )
    return CommandAgent(spec, LoopSpec(name="L", agent="cmd", prompt="p", workspace=tmp_path))


async def turn(
    cmd: CommandAgent, tmp_path: Path, *, prompt: str = "hello", n: int = 1
) -> list[tuple[float, AgentEvent]]:
    budget = LedgerTurnBudget(Ledger("L", Limits()))
    request = AgentRequest(
        loop="L",
        iteration=n,
        prompt=prompt,
        workspace=tmp_path,
        budget=budget,
        env={
            "LOOPVISOR_LOOP": "L",
            "LOOPVISOR_ITERATION": str(n),
            "LOOPVISOR_WORKSPACE": str(tmp_path),
        },
    )
    started = time.monotonic()
    async with agent_events(cmd, request) as stream:
        out = [(time.monotonic() - started, e) async for e in stream]
    budget.release()
    return out


def events(stamped: list[tuple[float, AgentEvent]]) -> list[AgentEvent]:
    return [e for _, e in stamped]


DUMP_ARGV = "import json, sys; json.dump(sys.argv[1:], open('argv.json', 'w'))"


async def test_prompt_is_one_argv_element_and_no_shell_runs_it(tmp_path: Path) -> None:
    (tmp_path / "keep").mkdir()
    got = events(
        await turn(agent(tmp_path, DUMP_ARGV, "$prompt", "x$prompt"), tmp_path, prompt=NASTY)
    )
    assert isinstance(got[-1], Done)
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv == [NASTY, "x" + NASTY]
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "pwned2").exists()
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "keep").is_dir()


async def test_placeholders_fill_whole_elements(tmp_path: Path) -> None:
    script = DUMP_ARGV
    cmd = agent(tmp_path, script, "$loop", "$iteration", "$workspace", "$prompt_file", "$HOME")
    await turn(cmd, tmp_path, prompt="the prompt", n=4)
    loop_name, iteration, workspace, prompt_file, home = json.loads(
        (tmp_path / "argv.json").read_text()
    )
    assert (loop_name, iteration, workspace) == ("L", "4", str(tmp_path))
    assert home == "$HOME"  # unknown names stay literal: no shell, no env expansion
    assert Path(prompt_file).name.startswith("loopvisor-prompt-")
    assert not Path(prompt_file).exists()  # noqa: ASYNC240 (removed after the turn)


async def test_prompt_file_holds_the_prompt_during_the_turn(tmp_path: Path) -> None:
    script = "import sys; open('seen.txt', 'w').write(open(sys.argv[1]).read())"
    await turn(agent(tmp_path, script, "$prompt_file"), tmp_path, prompt=NASTY)
    assert (tmp_path / "seen.txt").read_text() == NASTY


async def test_no_prompt_file_is_written_for_a_command_that_does_not_name_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: the file cost a creation, a write and a removal every turn."""
    made: list[object] = []
    real = tempfile.mkstemp

    def counting_mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        made.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", counting_mkstemp)
    script = "import sys; open('argv.txt', 'w').write(repr(sys.argv[1:]))"
    got = events(await turn(agent(tmp_path, script, "$prompt", "${loop}"), tmp_path, prompt="p"))
    assert isinstance(got[-1], Done)
    assert (tmp_path / "argv.txt").read_text() == "['p', 'L']"
    assert made == []
    await turn(agent(tmp_path, script, "x${prompt_file}"), tmp_path, prompt="p")
    assert len(made) == 1
    assert "loopvisor-prompt-" in (tmp_path / "argv.txt").read_text()


async def test_stdin_true_pipes_the_prompt(tmp_path: Path) -> None:
    script = "import sys, json; json.dump([sys.stdin.read(), sys.argv[1:]], open('in.json', 'w'))"
    got = events(await turn(agent(tmp_path, script, stdin=True), tmp_path, prompt=NASTY))
    assert isinstance(got[-1], Done)
    data, argv = json.loads((tmp_path / "in.json").read_text())
    assert data == NASTY
    assert argv == []


async def test_env_and_cwd(tmp_path: Path) -> None:
    script = (
        "import json, os; json.dump({'cwd': os.getcwd(), "
        "**{k: os.environ.get(k) for k in ('LOOPVISOR_LOOP', 'LOOPVISOR_ITERATION', "
        "'LOOPVISOR_WORKSPACE', 'EXTRA')}}, open('env.json', 'w'))"
    )
    await turn(agent(tmp_path, script, env={"EXTRA": "yes"}), tmp_path, n=3)
    data = json.loads((tmp_path / "env.json").read_text())
    assert data == {
        "cwd": str(tmp_path),
        "LOOPVISOR_LOOP": "L",
        "LOOPVISOR_ITERATION": "3",
        "LOOPVISOR_WORKSPACE": str(tmp_path),
        "EXTRA": "yes",
    }


async def test_stdout_and_stderr_stream_line_by_line(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "print('first', flush=True)\n"
        "print('oops', file=sys.stderr, flush=True)\n"
        "time.sleep(0.4)\n"
        "print('second', flush=True)\n"
        "sys.stdout.write('no newline')\n"
    )
    stamped = await turn(agent(tmp_path, script), tmp_path)
    deltas = [(t, e) for t, e in stamped if isinstance(e, TextDelta)]
    assert [(e.stream, e.text) for _, e in deltas if e.stream == "stdout"] == [
        ("stdout", "first\n"),
        ("stdout", "second\n"),
        ("stdout", "no newline\n"),
    ]
    assert [e.text for _, e in deltas if e.stream == "stderr"] == ["oops\n"]
    first_at = next(t for t, e in deltas if e.text == "first\n")
    second_at = next(t for t, e in deltas if e.text == "second\n")
    assert second_at - first_at >= 0.3  # the first line arrived before the second was printed
    done = events(stamped)[-1]
    assert isinstance(done, Done)
    assert done.output == "first\nsecond\nno newline"  # stdout only


async def test_cpu_time_is_reported(tmp_path: Path) -> None:
    script = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass"
    got = events(await turn(agent(tmp_path, script), tmp_path))
    usage = [e for e in got if isinstance(e, Usage)]
    assert len(usage) == 1
    assert usage[0].tokens == 0
    # sampled every 0.2 s while it runs: the last slice before exit may be missed
    assert 0.35 <= usage[0].cpu_s <= 1.5


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    started = time.monotonic()
    got = events(await turn(agent(tmp_path, GRANDCHILD_SCRIPT, timeout=1.0), tmp_path))
    assert time.monotonic() - started < 6
    failed = got[-1]
    assert isinstance(failed, AgentFailed)
    assert "timed out" in failed.message
    assert failed.retryable
    assert failed.output == "started"
    pids = read_pids(tmp_path / "pids.txt")
    assert len(pids) == 2
    assert wait_gone(pids, timeout=3) == []


async def test_nonzero_exit_is_an_agent_failure(tmp_path: Path) -> None:
    script = "import sys; print('partial'); print('boom: bad flag', file=sys.stderr); sys.exit(7)"
    failed = events(await turn(agent(tmp_path, script), tmp_path))[-1]
    assert isinstance(failed, AgentFailed)
    assert failed.message.endswith("exited with code 7: boom: bad flag")
    assert failed.retryable
    assert failed.output == "partial"


async def test_missing_program_is_an_agent_failure(tmp_path: Path) -> None:
    spec = CommandAgentSpec(name="cmd", command=("/nonexistent/agent-cli", "$prompt"))
    cmd = CommandAgent(spec, LoopSpec(name="L", agent="cmd", prompt="p", workspace=tmp_path))
    failed = events(await turn(cmd, tmp_path))[-1]
    assert isinstance(failed, AgentFailed)
    assert "could not start" in failed.message


async def test_failures_count_toward_retries_then_the_loop_fails(tmp_path: Path) -> None:
    script = (
        "import sys; open('attempts.txt', 'a').write(sys.argv[1] + '\\n'); "
        "print('no luck', file=sys.stderr); sys.exit(3)"
    )
    config = load(
        tmp_path,
        supervisor_table(),
        command_agent("flaky", script, "$iteration"),
        loop("L", "flaky", done_marker="DONE", budget={"retries": 2}, max_iterations=5),
    )
    rec = await run_recorded(config, timeout=15)
    result = rec.result("L")
    assert result.state == "failed"
    assert "2 retries used" in result.reason
    assert "exited with code 3: no luck" in result.reason
    # three attempts, all of iteration 1: a failed turn runs the same iteration again
    assert (tmp_path / "attempts.txt").read_text().split() == ["1", "1", "1"]
    outcomes = [f.outcome for f in rec.of(ev.IterationFinished, "L")]
    assert outcomes == ["error", "error", "failed"]
    waits = [s for s in rec.of(ev.LoopStateChanged, "L") if s.state == "waiting"]
    assert [w.reason.split(" after")[0] for w in waits] == ["retry 1/2", "retry 2/2"]
    assert rec.summary is not None
    assert rec.summary.exit_code == 1


async def test_a_success_after_a_failure_continues_normally(tmp_path: Path) -> None:
    script = (
        "import pathlib, sys\n"
        "p = pathlib.Path('count.txt')\n"
        "n = int(p.read_text()) + 1 if p.exists() else 1\n"
        "p.write_text(str(n))\n"
        "if n == 1: sys.exit(1)\n"
        "print('DONE')\n"
    )
    config = load(
        tmp_path,
        supervisor_table(),
        command_agent("once-flaky", script),
        loop("L", "once-flaky", done_marker="DONE", budget={"retries": 1}),
    )
    rec = await run_recorded(config, timeout=15)
    assert rec.result("L").state == "succeeded"
    assert rec.result("L").iterations == 1
    assert [f.outcome for f in rec.of(ev.IterationFinished, "L")] == ["error", "succeeded"]


async def test_turn_ends_when_the_agent_exits_even_if_a_child_keeps_its_pipes(
    tmp_path: Path,
) -> None:
    """A CLI that leaves a background child (holding stdout) is done when it exits;
    the child is killed with the group instead of holding the turn open."""
    script = (
        "import os, subprocess\n"
        "child = subprocess.Popen(['sleep', '30'])\n"
        "open('pids.txt', 'w').write(str(child.pid))\n"
        "print('DONE', flush=True)\n"
    )
    started = time.monotonic()
    got = events(await turn(agent(tmp_path, script, timeout=20.0), tmp_path))
    assert time.monotonic() - started < 5
    done = got[-1]
    assert isinstance(done, Done), done
    assert done.output == "DONE"
    assert wait_gone(read_pids(tmp_path / "pids.txt"), timeout=3) == []


async def test_a_silent_command_agent_is_caught_by_the_stall_detector(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        supervisor_table(),
        command_agent("sleeper", GRANDCHILD_SCRIPT),
        loop("L", "sleeper", done_marker="DONE", stuck={"stall": "700ms"}, on_stuck="stop"),
    )
    started = time.monotonic()
    rec = await run_recorded(config, timeout=15)
    assert time.monotonic() - started < 6
    result = rec.result("L")
    assert result.state == "stopped"
    assert "stall" in result.reason
    assert wait_gone(read_pids(tmp_path / "pids.txt"), timeout=3) == []


async def test_a_large_prompt_on_stdin_arrives_whole(tmp_path: Path) -> None:
    prompt = "".join(f"line {i}: {'x' * 90}\n" for i in range(3000))  # ~300 kB
    script = (
        "import sys, hashlib\n"
        "data = sys.stdin.read()\n"
        "print(len(data), hashlib.sha256(data.encode()).hexdigest())\n"
    )
    got = events(await turn(agent(tmp_path, script, stdin=True), tmp_path, prompt=prompt))
    done = got[-1]
    assert isinstance(done, Done), done
    assert done.output == f"{len(prompt)} {hashlib.sha256(prompt.encode()).hexdigest()}"


async def test_timeout_also_kills_a_grandchild_that_left_the_group(tmp_path: Path) -> None:
    script = (
        "import os, signal, subprocess, time\n"
        "child = subprocess.Popen(['python3', '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(30)'], "
        "start_new_session=True)\n"
        "open('pids.txt', 'w').write(f'{os.getpid()} {child.pid}')\n"
        "time.sleep(30)\n"
    )
    got = events(await turn(agent(tmp_path, script, timeout=1.0), tmp_path))
    assert isinstance(got[-1], AgentFailed)
    pids = read_pids(tmp_path / "pids.txt")
    assert len(pids) == 2
    assert wait_gone(pids, timeout=5) == []
