"""Issue 11, item 1: a resumed iteration gets the feedback the killed one had.

A real `loopvisor run --json` child is SIGKILLed during iteration 2's agent turn; the
resumed run must send iteration 2 a prompt byte-identical to the one the killed run
sent: the same `$check_output` (iteration 1's failing check), `$last_output`
(iteration 1's reply) and the same detector state (the resumed run goes on to be
declared stuck at the same iteration a run without the crash would have been).
"""

from __future__ import annotations

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
