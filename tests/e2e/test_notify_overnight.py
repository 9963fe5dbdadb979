"""Notifications for the overnight states, end to end: a usage-limit wait (the fake
`claude` replaying the recorded usage-limit lines with a reset a few seconds ahead)
sends `attention` when the wait starts and `resumed` when work resumes; a loop paused
by its budget (`on_exhausted = "pause"`) sends `attention`; a webhook on 127.0.0.1
receives them."""

from __future__ import annotations

import time
from pathlib import Path

from claude_support import DATA, FakeClaude, recording
from helpers import json_lines, loop, run_cli, sim_agent, supervisor_table, table, write_config
from webhook_support import webhook


def notify_table(url: str) -> str:
    return table("notify", webhook=url, coalesce=0.1, retries=0)


def usage_limit_lines(tmp_path: Path, resets_at: int) -> Path:
    """The recorded five-hour refusal with its reset moved to `resets_at`."""
    text = (DATA / "usage_limit_five_hour.jsonl").read_text()
    path = tmp_path / "usage_limit.jsonl"
    path.write_text(text.replace('"resetsAt":1796227666', f'"resetsAt":{resets_at}'))
    return path


def test_a_usage_limit_wait_sends_attention_then_resumed(tmp_path: Path) -> None:
    fake = FakeClaude(tmp_path)
    # Far enough ahead that the refusal is read before the reset even on a loaded
    # machine (at +3 s, a slow start let the reset pass first: no wait, no alert).
    reset = int(time.time()) + 8
    fake.script(
        [{"file": str(usage_limit_lines(tmp_path, reset))}],
        [{"file": recording("success_tool_use.jsonl")}],
    )
    with webhook() as hook:
        config = write_config(
            tmp_path,
            notify_table(hook.url),
            supervisor_table(),
            table("agents.cc", kind="claude-code", command=str(fake.path), env=fake.env),
            loop("a", "cc", done_marker="hello.txt written", workspace="."),
        )
        result = run_cli("run", config, "--json", cwd=tmp_path, timeout=60)
        hook.wait_for(3)
        docs = hook.documents()
    assert result.returncode == 0, result.stderr
    assert [d["event"] for d in docs] == ["attention", "resumed", "finished"], docs
    attention, resumed = docs[0], docs[1]
    label = time.strftime("%H:%M", time.localtime(reset))
    assert (attention["loop"], attention["state"]) == ("a", "waiting")
    assert attention["reason"] == f"usage limit, resets {label}"
    assert (resumed["loop"], resumed["state"]) == ("a", "running")
    assert f"usage limit, resets {label}" in resumed["reason"]
    states = [e for e in json_lines(result.stdout) if e.get("type") == "state"]
    assert any(e["cause"] == "usage_limit" for e in states), states
    assert len(fake.invocations()) == 2


def test_a_loop_paused_by_its_budget_sends_attention(tmp_path: Path) -> None:
    with webhook() as hook:
        config = write_config(
            tmp_path,
            notify_table(hook.url),
            supervisor_table(),
            sim_agent("s", rate=0),
            loop(
                "a",
                "s",
                max_iterations=6,
                checks=[{"name": "f", "run": "false"}],
                stuck={"same_failure": 0, "same_output": 0, "oscillation": False},
                on_exhausted="pause",
                budget={"tokens": 40},
                workspace=".",
            ),
        )
        result = run_cli("run", config, "--json", cwd=tmp_path, timeout=60)
        hook.wait_for(2)
        docs = hook.documents()
    assert result.returncode == 4, result.stderr  # nobody raised it: waits for a person
    attention = [d for d in docs if d["event"] == "attention"]
    assert len(attention) == 1, docs
    assert (attention[0]["loop"], attention[0]["state"]) == ("a", "paused")
    assert attention[0]["reason"].startswith("budget: loop 'a' tokens budget used up")
