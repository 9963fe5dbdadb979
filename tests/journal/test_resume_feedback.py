"""Issue 11, item 1: a resumed iteration gets the feedback the killed one had.

A real `loopvisor run --json` child is SIGKILLed during iteration 2's agent turn; the
resumed run must send iteration 2 a prompt byte-identical to the one the killed run
sent: the same `$check_output` (iteration 1's failing check), `$last_output`
(iteration 1's reply) and the same detector state (the resumed run goes on to be
declared stuck at the same iteration a run without the crash would have been).
Operator notes not yet answered by a finished iteration survive a kill -9 of `serve`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
from pathlib import Path

from daemon import kill_daemon, poll, start_daemon
from helpers import command_agent, loop, supervisor_table, wait_gone, write_config
from resume_support import Harness, attempts, lines_of

# An agent that answers "attempt N", and in iteration 2 waits for AGENT_SLEEP seconds
# first (the killed session sets it; the resumed one does not).
AGENT = (
    "import os, time\n"
    "n = int(os.environ['LOOPVISOR_ITERATION'])\n"
    "with open('../agent.pids', 'a') as fh:  # outside the workspace: not a change\n"
    "    fh.write(f'{os.getpid()}\\n')\n"
    "print(f'attempt {n} thinking', flush=True)\n"
    "if n == 2:\n"
    "    time.sleep(float(os.environ.get('AGENT_SLEEP', '0')))\n"
    "print(f'attempt {n} done', flush=True)\n"
)
# Fails every time with the same evidence: the same-failure detector fires at 3.
CHECK = {"name": "unit", "run": "echo 'FAIL: test_answer expected 42, got 41'; exit 1"}
PROMPT = (
    "Iteration $iteration.\nLast check output:\n$check_output\n\nYour last reply:\n$last_output"
)


def test_a_resumed_iteration_gets_the_same_prompt_and_stuck_state(harness: Harness) -> None:
    h = harness
    (h.tmp_path / "w").mkdir()
    write_config(
        h.tmp_path,
        supervisor_table(max_concurrent=1),
        command_agent("cli", AGENT, pass_env=["AGENT_SLEEP"]),
        loop("w", "cli", workspace="w", prompt=PROMPT, checks=[CHECK], max_iterations=6),
    )
    first = h.start(env={"AGENT_SLEEP": "30"})
    first.wait_for(
        "iteration 2's agent",
        lambda e: e["type"] == "output" and "attempt 2 thinking" in e["text"],
    )
    first.kill9()
    pids = [int(p) for p in lines_of(h.tmp_path / "agent.pids")]
    h.groups.update(pids)
    killed_prompt = next(e for e in first.of("iteration_started") if e["iteration"] == 2)
    assert "FAIL: test_answer expected 42" in killed_prompt["prompt"]
    assert "attempt 1 done" in killed_prompt["prompt"]

    second, summary = h.resume_to_end(env={"AGENT_SLEEP": "0"})
    wait_gone(pids, timeout=5.0)
    resumed_prompt = next(e for e in second.of("iteration_started") if e["iteration"] == 2)
    assert resumed_prompt["prompt"] == killed_prompt["prompt"]
    # Without the crash the same failure seen in 1, 2, 3 makes it stuck at 3: the
    # detector's streak from iteration 1 survived the crash.
    assert summary["exit_code"] == 4, summary
    assert attempts(h.history("w")) == [
        (1, "continue"),
        (2, "interrupted"),
        (2, "continue"),
        (3, "stuck"),
    ]


# Waits in iteration N until the file ../goN exists (the test's cue), then answers.
GATED = (
    "import os, pathlib, time\n"
    "n = os.environ['LOOPVISOR_ITERATION']\n"
    "with open('../agent.pids', 'a') as fh:  # outside the workspace: not a change\n"
    "    fh.write(f'{os.getpid()}\\n')\n"
    "print(f'attempt {n} thinking', flush=True)\n"
    "while not pathlib.Path(f'../go{n}').exists():\n"
    "    time.sleep(0.02)\n"
    "print(f'attempt {n} done', flush=True)\n"
)


def _prompts(state: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(f"file:{state / 'journal.sqlite3'}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT iteration, prompt FROM iterations WHERE loop = 'w' ORDER BY id"
        ).fetchall()
    return [(int(n), str(p)) for n, p in rows]


def test_operator_notes_not_yet_answered_survive_a_kill_9(tmp_path: Path) -> None:
    """Note A is injected during iteration 1 (so iteration 2's prompt carries it), note B
    during iteration 2 (queued for the next prompt); the server is SIGKILLed during
    iteration 2. Resumed, the re-run iteration 2 gets both notes: A, because the
    iteration that answered it never finished, and B, which no prompt had carried yet;
    nothing is lost and nothing is sent twice."""
    (tmp_path / "w").mkdir()
    toml = "\n".join(
        [
            supervisor_table(1),
            command_agent("cli", GATED),
            loop("w", "cli", workspace="w", prompt=PROMPT, checks=[CHECK], max_iterations=2),
        ]
    )
    pids_file = tmp_path / "agent.pids"
    d = start_daemon(tmp_path, toml)
    daemons = [d.pid]
    try:
        poll(lambda: len(lines_of(pids_file)) == 1, timeout=20, what="iteration 1's agent")
        assert d.ctl("inject", "w", "note A: use the helper").returncode == 0
        (tmp_path / "go1").touch()
        poll(lambda: len(lines_of(pids_file)) == 2, timeout=20, what="iteration 2's agent")
        assert d.ctl("inject", "w", "note B: keep it short").returncode == 0
        os.kill(d.pid, signal.SIGKILL)
        wait_gone([d.pid], timeout=10)
        for pid in map(int, lines_of(pids_file)):  # the agents are on their own
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        (killed_prompt,) = [p for n, p in _prompts(d.state) if n == 2]
        assert "Operator note: note A: use the helper" in killed_prompt
        assert "note B" not in killed_prompt

        (tmp_path / "go2").touch()
        resumed = d.resume()
        daemons.append(resumed.pid)
        poll(lambda: resumed.loop("w")["state"] == "failed", timeout=30, what="the end")
    finally:
        for pid in daemons:
            kill_daemon(pid)
    prompts = _prompts(d.state)
    assert [n for n, _ in prompts] == [1, 2, 2], prompts
    assert prompts[2][1] == killed_prompt + "\nOperator note: note B: keep it short"
