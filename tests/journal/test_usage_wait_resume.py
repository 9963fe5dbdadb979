"""A usage-limit wait survives a kill -9: the resumed run reads the account's wait
from the journal (the `waiting` state with cause "usage_limit" and its wait) and
waits out the rest of it, instead of asking once more and being refused."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from claude_support import DATA, recording
from helpers import loop, supervisor_table, table, write_config
from resume_support import Harness, journal_events

FAKE = f"""#!{sys.executable}
import json, os, sys, time
reset = float(os.environ["FAKE_RESET"])
refused = time.time() < reset
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"at": time.time(), "refused": refused}}) + "\\n")
lines = os.environ["FAKE_REFUSAL" if refused else "FAKE_SUCCESS"]
sys.stdout.write(open(lines).read())
"""
"""A `claude` refused by the usage window until FAKE_RESET, then answering."""


def test_a_resumed_run_waits_out_the_journalled_usage_limit(
    tmp_path: Path, harness: Harness
) -> None:
    reset = int(time.time()) + 15
    refusal = tmp_path / "refusal.jsonl"
    refusal.write_text(
        (DATA / "usage_limit_five_hour.jsonl")
        .read_text()
        .replace('"resetsAt":1796227666', f'"resetsAt":{reset}')
    )
    fake = tmp_path / "claude"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    env = {
        "FAKE_RESET": str(reset),
        "FAKE_LOG": str(calls),
        "FAKE_REFUSAL": str(refusal),
        "FAKE_SUCCESS": recording("success_tool_use.jsonl"),
    }
    write_config(
        tmp_path,
        supervisor_table(),
        table("agents.cc", kind="claude-code", command=str(fake), env=env),
        loop("a", "cc", done_marker="hello.txt written", workspace="."),
    )
    first = harness.start()
    first.wait_for("the usage-limit wait", lambda e: e.get("cause") == "usage_limit")
    first.until(
        "the wait in the journal",
        lambda: any(e["cause"] == "usage_limit" for e in journal_events(harness.state, "state")),
    )
    first.kill9()
    second, summary = harness.resume_to_end(timeout=60)
    tries = [json.loads(line) for line in calls.read_text().splitlines()]
    assert [t["refused"] for t in tries] == [True, False], tries  # no refused request
    assert tries[1]["at"] >= reset
    assert summary["exit_code"] == 0, summary
    waits = [e for e in second.of("state", "a") if e["cause"] == "usage_limit"]
    label = time.strftime("%H:%M", time.localtime(reset))
    assert waits, second.of("state", "a")
    assert waits[0]["reason"] == f"usage limit, resets {label}"
