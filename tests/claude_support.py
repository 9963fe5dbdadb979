"""Driving the `claude-code` agent in tests: a fake `claude` executable written to
tmp_path that replays recorded stream-json lines (tests/data/stream_json/) with delays,
hangs, exits or a grandchild, as a scenario says (`FakeClaude`), the agent and its
budget built as the loop builds them, and one turn driven as the loop drives it
(`collect`: a producer task, every Usage charged).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
from helpers import TESTS, agent_events, alive

from supervisor.agents import AgentContext, build_agent
from supervisor.agents.base import Agent, AgentEvent, AgentRequest, Usage
from supervisor.agents.claude_code import ClaudeCodeAgent
from supervisor.agents.kinds.claude_code import ClaudeCodeAgentSpec
from supervisor.agents.usage import Tokens
from supervisor.budget import Ledger
from supervisor.spec import ContextMode, Limits, LoopSpec
from supervisor.turn_budget import LedgerTurnBudget

DATA = TESTS / "data" / "stream_json"
"""Stream-json lines recorded from the real CLI (see agents/test_stream_json.py)."""

FAKE_CLAUDE = f"""#!{sys.executable}
import json, os, signal, subprocess, sys, time

scenario = json.load(open(os.environ["FAKE_CLAUDE_SCENARIO"]))
log = os.environ["FAKE_CLAUDE_LOG"]
turn = sum(1 for _ in open(log)) if os.path.exists(log) else 0
steps = scenario["turns"][min(turn, len(scenario["turns"]) - 1)]
stdin = b"" if sys.stdin is None or sys.stdin.closed else sys.stdin.buffer.read()
with open(log, "a") as f:
    f.write(json.dumps({{
        "argv": sys.argv[1:], "cwd": os.getcwd(), "pid": os.getpid(),
        "pgid": os.getpgid(0), "stdin": len(stdin),
        "env": {{k: v for k, v in os.environ.items()
                if k.startswith(("SPEC_", "REQ_", "SHARED", "LOOPVISOR_"))}},
        "has_path": "PATH" in os.environ,
    }}) + "\\n")

def out(line):
    sys.stdout.write(line + "\\n")
    sys.stdout.flush()

for step in steps:
    if "out" in step:
        out(step["out"])
    elif "file" in step:
        for line in open(step["file"]).read().splitlines():
            out(line)
            time.sleep(step.get("delay", 0))
    elif "err" in step:
        sys.stderr.write(step["err"] + "\\n")
        sys.stderr.flush()
    elif "sleep" in step:
        time.sleep(step["sleep"])
    elif "grandchild" in step:
        child = subprocess.Popen(["sleep", "1000"])
        open(step["grandchild"], "w").write(str(child.pid))
    elif "ignore_term" in step:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif "tick" in step:
        while True:
            out("tick")
            time.sleep(step["tick"])
    elif "hang" in step:
        while True:
            time.sleep(1)
    elif "exit" in step:
        sys.exit(step["exit"])
"""


def recording(name: str) -> str:
    return str(DATA / name)


def lines_of(name: str) -> list[str]:
    return (DATA / name).read_text().splitlines()


class FakeClaude:
    """The fake executable plus its scenario and invocation log."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "fake"
        self.dir.mkdir()
        self.path = self.dir / "claude"
        self.path.write_text(FAKE_CLAUDE)
        self.path.chmod(0o755)
        self.scenario = self.dir / "scenario.json"
        self.log = self.dir / "invocations.jsonl"

    def script(self, *turns: list[dict[str, Any]]) -> None:
        self.scenario.write_text(json.dumps({"turns": list(turns)}))

    @property
    def env(self) -> dict[str, str]:
        return {"FAKE_CLAUDE_SCENARIO": str(self.scenario), "FAKE_CLAUDE_LOG": str(self.log)}

    def invocations(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def make_agent(
    tmp_path: Path,
    workspace: Path,
    *,
    command: str,
    env: Mapping[str, str] | None = None,
    context: ContextMode = "fresh",
    **spec_kw: Any,
) -> ClaudeCodeAgent:
    spec = ClaudeCodeAgentSpec(name="cc", command=command, env=dict(env or {}), **spec_kw)
    loop = LoopSpec(name="demo", agent="cc", prompt="p", workspace=workspace, context=context)
    agent = build_agent(spec, loop, AgentContext(state_dir=tmp_path / "state"))
    assert isinstance(agent, ClaudeCodeAgent)
    return agent


def make_budget(tokens: int | None = None, usd: float | None = None) -> LedgerTurnBudget:
    root = Ledger("global", Limits())
    return LedgerTurnBudget(Ledger("demo", Limits(tokens=tokens, usd=usd), parent=root))


def request(
    workspace: Path,
    budget: LedgerTurnBudget,
    prompt: str = "write hello.txt",
    env: Mapping[str, str] | None = None,
    iteration: int = 1,
) -> AgentRequest:
    return AgentRequest(
        loop="demo",
        iteration=iteration,
        prompt=prompt,
        workspace=workspace,
        budget=budget,
        env=dict(env or {}),
    )


async def collect(
    agent: Agent,
    req: AgentRequest,
    on_event: Callable[[AgentEvent], None] | None = None,
) -> list[AgentEvent]:
    """Drive a turn the way the loop does: a producer task, charging every Usage."""
    events: list[AgentEvent] = []
    async with agent_events(agent, req) as stream:
        async for event in stream:
            events.append(event)
            if isinstance(event, Usage):
                assert isinstance(req.budget, LedgerTurnBudget)
                req.budget.charge(event)
            if on_event is not None:
                on_event(event)
    return events


def token_sum(events: list[AgentEvent]) -> Tokens:
    total = Tokens()
    for u in events:
        if isinstance(u, Usage):
            total = total + Tokens(
                u.input_tokens, u.output_tokens, u.cache_creation_tokens, u.cache_read_tokens
            )
    return total


def usd_sum(events: list[AgentEvent]) -> float:
    return sum(e.usd or 0.0 for e in events if isinstance(e, Usage))


async def wait_gone(*pids: int, within: float = 3.0) -> list[int]:
    """Pids still alive after `within` seconds (empty: all gone)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        left = alive(pids)
        if not left:
            return []
        await anyio.sleep(0.05)
    return alive(pids)


async def wait_for_file(path: Path, within: float = 10.0) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        apath = anyio.Path(path)
        if await apath.exists() and (content := await apath.read_text()):
            return content
        await anyio.sleep(0.02)
    raise AssertionError(f"{path} never appeared")
