"""ClaudeCodeAgent with the real Claude Code CLI, offline: it talks to the fake Messages
API in tests/fake_anthropic.py. Skipped when the CLI is not installed (found through
LOOPVISOR_CLAUDE_BIN, else .ci/node from scripts/install-claude-code.sh, else `claude`
on PATH); LOOPVISOR_REQUIRE_CLAUDE_CLI=1 (CI) makes them fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from claude_support import collect, make_agent, make_budget, request, token_sum, usd_sum
from fake_anthropic import FakeAnthropic, text, tool_use, usage_limit
from helpers import REPO, load, loop, run_recorded, supervisor_table, table, wait_for

from supervisor import events as ev
from supervisor.agents.base import Done, TextDelta, ToolCall, ToolResult
from supervisor.agents.usage import Tokens

pytestmark = pytest.mark.anyio


# -- the real CLI ------------------------------------------------------------------------------


def claude_bin() -> tuple[str | None, str]:
    """The CLI to run, or None and why not."""
    configured = os.environ.get("LOOPVISOR_CLAUDE_BIN")
    if configured:
        if Path(configured).exists():
            return configured, ""
        return None, f"LOOPVISOR_CLAUDE_BIN={configured} does not exist"
    local = REPO / ".ci" / "node" / "node_modules" / ".bin" / "claude"
    if local.exists():
        return str(local), ""
    found = shutil.which("claude")
    if found:
        return found, ""
    return None, (
        "Claude Code CLI not installed: run scripts/install-claude-code.sh "
        "(or set LOOPVISOR_CLAUDE_BIN / put `claude` on PATH)"
    )


@pytest.fixture
def claude() -> str:
    """The real CLI; skipped when absent, failed when LOOPVISOR_REQUIRE_CLAUDE_CLI=1 (CI)."""
    path, why = claude_bin()
    if path is None:
        if os.environ.get("LOOPVISOR_REQUIRE_CLAUDE_CLI") == "1":
            pytest.fail(f"LOOPVISOR_REQUIRE_CLAUDE_CLI=1 but {why}")
        pytest.skip(why)
    return path


def offline_env(server: FakeAnthropic, home: Path) -> dict[str, str]:
    home.mkdir(exist_ok=True)
    return {
        "ANTHROPIC_BASE_URL": server.base_url,
        "ANTHROPIC_API_KEY": "sk-ant-dummy",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "HOME": str(home),
    }


def main_turn(body: Mapping[str, Any]) -> bool:
    """A request of the agent loop (it offers the Write tool), not a side call."""
    return any(t.get("name") == "Write" for t in body.get("tools", []))


def after_tool_result(body: Mapping[str, Any]) -> bool:
    content = body["messages"][-1].get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def server_tokens(server: FakeAnthropic) -> Tokens:
    t = server.totals
    return Tokens(
        t.input_tokens, t.output_tokens, t.cache_creation_input_tokens, t.cache_read_input_tokens
    )


@pytest.mark.claude_cli
async def test_real_cli_writes_a_file_and_usage_matches_the_server(
    tmp_path: Path, claude: str, workspace: Path
) -> None:
    target = workspace / "hello.txt"
    replies = [
        tool_use(
            "Write",
            {"file_path": str(target), "content": "hello from the fake model\n"},
            preface="I'll create the file.",
            when=lambda b: main_turn(b) and not after_tool_result(b),
        ),
        text("Created hello.txt.", when=lambda b: main_turn(b) and after_tool_result(b)),
    ]
    with FakeAnthropic(replies) as server:
        agent = make_agent(
            tmp_path,
            workspace,
            command=claude,
            env=offline_env(server, tmp_path / "home"),
            args=("--permission-mode", "acceptEdits"),
            model="claude-sonnet-4-5",
            timeout=120,
            stall=60,
        )
        budget = make_budget()
        events = await collect(agent, request(workspace, budget, "Create hello.txt"))

    done = events[-1]
    assert isinstance(done, Done), events[-1]
    assert done.stop_reason == "success"
    assert done.output.strip() == "Created hello.txt."
    assert target.read_text() == "hello from the fake model\n"
    [call] = [e for e in events if isinstance(e, ToolCall)]
    assert call.name == "Write"
    assert call.input["file_path"] == str(target)
    [result] = [e for e in events if isinstance(e, ToolResult)]
    assert result.tool_id == call.tool_id
    assert not result.is_error
    assert "I'll create the file." in "".join(
        e.text for e in events if isinstance(e, TextDelta) and e.stream == "assistant"
    )
    assert server.pending == 0

    # Every token the server billed was charged, no more: the CLI's own result totals
    # (model_usage_since_last_result) cover side calls too, and equal the server's log.
    assert server.totals.messages == len(server.message_requests())
    assert token_sum(events) == server_tokens(server)
    assert budget.ledger.tokens_spent == server.totals.tokens
    # USD: priced from our table while running, settled to the CLI's own figure.
    assert agent.session_id == done.session_id
    cost = agent.session_cost_usd  # the result's total_cost_usd (a fresh session)
    assert cost is not None
    assert cost > 0
    assert usd_sum(events) == pytest.approx(cost, rel=1e-9)
    assert budget.ledger.usd_spent == pytest.approx(cost, rel=1e-9)


@pytest.mark.claude_cli
async def test_real_cli_resumes_the_session_in_continue_mode(
    tmp_path: Path, claude: str, workspace: Path
) -> None:
    with FakeAnthropic([text("First answer."), text("Second answer.")]) as server:
        agent = make_agent(
            tmp_path,
            workspace,
            command=claude,
            env=offline_env(server, tmp_path / "home"),
            context="continue",
            timeout=120,
            stall=60,
        )
        budget = make_budget()
        first = await collect(agent, request(workspace, budget, "Say something."))
        before = server_tokens(server)
        sid = agent.session_id
        second = await collect(agent, request(workspace, budget, "Again.", iteration=2))
        after = server_tokens(server)
        requests = server.message_requests()

    assert isinstance(first[-1], Done)
    assert isinstance(second[-1], Done)
    assert sid is not None
    assert second[-1].session_id == sid  # the same session, continued
    assert second[-1].output.strip() == "Second answer."
    # The second request carried the first exchange.
    history = json.dumps(requests[-1].body["messages"])
    assert "First answer." in history
    assert "Say something." in history
    # Each turn charged exactly what the server billed during it (not the session total).
    assert token_sum(first) == before
    assert token_sum(first) + token_sum(second) == after
    assert budget.ledger.tokens_spent == after.total


# -- the real CLI under a real loop ----------------------------------------------------------


def cc_agent_table(claude: str, server: FakeAnthropic, home: Path) -> str:
    return table(
        "agents.cc",
        kind="claude-code",
        command=claude,
        model="claude-sonnet-4-5",
        args=["--permission-mode", "acceptEdits"],
        env=offline_env(server, home),
        timeout="2m",
        stall="1m",
    )


HELLO_CHECK = {"name": "hello", "run": "cat hello.txt", "pattern": "^Hello, world$"}


@pytest.mark.claude_cli
async def test_real_cli_loop_converges_when_its_write_makes_the_check_pass(
    tmp_path: Path,
    claude: str,
) -> None:
    target = tmp_path / "hello.txt"
    replies = [
        # Iteration 1: the model only talks; the check fails.
        text("I will get to it.", when=main_turn),
        # Iteration 2: it writes the file the check wants.
        tool_use(
            "Write",
            {"file_path": str(target), "content": "Hello, world\n"},
            when=lambda b: main_turn(b) and not after_tool_result(b),
        ),
        text("Wrote hello.txt.", when=lambda b: main_turn(b) and after_tool_result(b)),
    ]
    with FakeAnthropic(replies) as server:
        config = load(
            tmp_path,
            supervisor_table(tokens=500_000),
            cc_agent_table(claude, server, tmp_path / "home"),
            loop("hello", "cc", checks=[HELLO_CHECK], max_iterations=4),
        )
        rec = await run_recorded(config, timeout=180)
        billed = server.totals.tokens
        requests = len(server.message_requests())

    result = rec.result("hello")
    assert (result.state, result.iterations) == ("succeeded", 2), result.reason
    assert target.read_text() == "Hello, world\n"
    assert [c.passed for c in rec.of(ev.CheckFinished, "hello")] == [False, True]
    assert [t.name for t in rec.of(ev.ToolCalled, "hello")] == ["Write"]
    assert requests == 3
    # The ledger holds exactly what the server billed.
    assert result.tokens == billed
    assert sum(u.tokens for u in rec.of(ev.UsageCharged, "hello")) == billed


@pytest.mark.claude_cli
async def test_real_cli_crossing_the_global_budget_is_killed_mid_turn(
    tmp_path: Path,
    claude: str,
) -> None:
    target = tmp_path / "hello.txt"
    replies = [
        tool_use(
            "Write",
            {"file_path": str(target), "content": "Hello, world\n"},
            when=lambda b: main_turn(b) and not after_tool_result(b),
        ),
        text("Wrote hello.txt.", when=lambda b: main_turn(b) and after_tool_result(b)),
    ]
    with FakeAnthropic(replies) as server:
        # Claude Code sends ~22k input tokens a request: the first fits, the second crosses.
        limit = 30_000
        config = load(
            tmp_path,
            supervisor_table(tokens=limit),
            cc_agent_table(claude, server, tmp_path / "home"),
            loop("hello", "cc", checks=[HELLO_CHECK], max_iterations=4),
        )
        rec = await run_recorded(config, timeout=180)
        billed = server.totals.tokens
        requests = server.message_requests()

    result = rec.result("hello")
    assert result.state == "exhausted", result.reason
    assert "crossed mid-turn" in result.reason
    assert result.iterations == 1
    assert len(requests) == 2  # the turn died during its second request
    charged = sum(u.tokens for u in rec.of(ev.UsageCharged, "hello"))
    assert result.tokens == charged
    assert limit < charged <= billed  # crossed, and never more than the server billed
    one_message = max(u.tokens for u in rec.of(ev.UsageCharged, "hello"))
    assert charged - limit <= one_message  # the overshoot is bounded by one message
    assert not rec.of(ev.CheckFinished, "hello")  # killed: no checks ran


@pytest.mark.claude_cli
@pytest.mark.timeout(180)  # four CLI starts and an 8 s reset; slow on a loaded machine
async def test_real_cli_usage_limit_makes_the_accounts_loops_wait_and_resume_at_the_reset(
    tmp_path: Path,
    claude: str,
) -> None:
    """Two loops on one Pro/Max login (same HOME, same OAuth token): the API refuses
    both with the subscription window's 429 until a reset a few seconds ahead. Both
    wait as `waiting: usage limit, resets HH:MM`, count no retry, and go on by
    themselves after the reset: loop a continues the session in which it had already
    written a.txt (its Write is not redone), and the ledgers hold what the server billed."""
    reset = int(time.time()) + 8

    def of(name: str) -> Any:
        return lambda b: main_turn(b) and f"{name}.txt" in json.dumps(b["messages"])

    def before_reset(b: Mapping[str, Any]) -> bool:
        return time.time() < reset

    a, b = of("a"), of("b")
    replies = [
        tool_use(
            "Write",
            {"file_path": str(tmp_path / "wa" / "a.txt"), "content": "a\n"},
            when=lambda body: a(body) and not after_tool_result(body),
        ),
        usage_limit(reset, when=lambda body: a(body) and before_reset(body)),
        usage_limit(reset, when=lambda body: b(body) and before_reset(body)),
        text("a.txt is there. DONE", when=a),
        text("b.txt too. DONE", when=b),
    ]
    (tmp_path / "wa").mkdir()
    (tmp_path / "wb").mkdir()
    with FakeAnthropic(replies) as server:
        env = offline_env(server, tmp_path / "home")
        del env["ANTHROPIC_API_KEY"]
        env["CLAUDE_CODE_OAUTH_TOKEN"] = "sk-ant-oat01-dummy"  # a subscription login
        config = load(
            tmp_path,
            supervisor_table(),
            table(
                "agents.cc",
                kind="claude-code",
                command=claude,
                model="claude-sonnet-4-5",
                args=["--permission-mode", "acceptEdits"],
                env=env,
                timeout="2m",
                stall="1m",
            ),
            loop("a", "cc", workspace="wa", prompt="Write a.txt", done_marker="DONE"),
            loop("b", "cc", workspace="wb", prompt="Write b.txt", done_marker="DONE"),
        )
        rec = await run_recorded(config, timeout=240)
        billed = server.totals.tokens
        requests = server.message_requests()

    # One refusal per loop: a request before the reset would have been refused too.
    assert len([r for r in requests if r.reply == "error 429"]) == 2
    for name in ("a", "b"):
        result = rec.result(name)
        assert (result.state, result.iterations) == ("succeeded", 1), result.reason
        waits = [
            e
            for e in rec.of(ev.LoopStateChanged, name)
            if e.state == "waiting" and e.cause == "usage_limit"
        ]
        assert waits, rec.states(name)
        label = time.strftime("%H:%M", time.localtime(reset))
        assert waits[0].reason == f"usage limit, resets {label}"
        assert waits[0].wait_seconds is not None
        assert waits[0].wait_seconds <= 9
        finished = rec.of(ev.IterationFinished, name)
        assert [(f.iteration, f.outcome) for f in finished] == [
            (1, "interrupted"),
            (1, "succeeded"),
        ]
        assert finished[0].reason == waits[0].reason
        # The same session, continued.
        assert finished[0].session_id is not None
        assert finished[1].session_id == finished[0].session_id
        assert rec.supervisor.runners[name].retries_used == 0
    # Loop a's resumed turn carried its first exchange: the Write happened once.
    assert [t.name for t in rec.of(ev.ToolCalled, "a")] == ["Write"]
    last_a = [r for r in requests if a(r.body)][-1]
    assert "tool_result" in json.dumps(last_a.body["messages"])
    assert (tmp_path / "wa" / "a.txt").read_text() == "a\n"
    # The ledger is exact: what the server billed, charged once.
    charged = sum(u.tokens for u in rec.of(ev.UsageCharged))
    assert charged == billed
    assert rec.result("a").tokens + rec.result("b").tokens == billed


# -- resuming a session at a message (issue 14: a fork cut at iteration N) ---------------------


def _print_turn(
    claude: str, env: Mapping[str, str], cwd: Path, prompt: str, *flags: str
) -> list[dict[str, Any]]:
    """One `claude -p` turn's stream-json lines (parsed)."""
    done = subprocess.run(
        [claude, "-p", "--output-format", "stream-json", "--verbose", *flags, "--", prompt],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.mark.claude_cli
async def test_real_cli_resume_session_at_forks_the_session_as_it_was_after_a_turn(
    tmp_path: Path, claude: str, workspace: Path
) -> None:
    """The CLI's hidden `--resume-session-at <uuid>` (2.1.332), with `--fork-session`:
    the new session holds the conversation up to that chain entry only (the `uuid` of
    the turn's last `assistant` line), not the turns the session had after it. What a
    fork at iteration N would need; pinned here, not used yet (see supervisor/fork.py)."""
    replies = [text("First answer."), text("Second answer."), text("Third answer.")]
    with FakeAnthropic(replies) as server:
        env = offline_env(server, tmp_path / "home")
        one = _print_turn(claude, env, workspace, "Say something.")
        sid = next(line["session_id"] for line in one if line.get("session_id"))
        _print_turn(claude, env, workspace, "Again.", f"--resume={sid}")
        at = [line["uuid"] for line in one if line.get("type") == "assistant"][-1]
        three = _print_turn(
            claude,
            env,
            workspace,
            "Third.",
            f"--resume={sid}",
            f"--resume-session-at={at}",
            "--fork-session",
        )
        history = json.dumps(server.message_requests()[-1].body["messages"])
    assert "First answer." in history
    assert "Second answer." not in history
    assert "Again." not in history
    result = next(line for line in three if line.get("type") == "result")
    assert result["session_id"] != sid
    assert result["result"].strip() == "Third answer."


@pytest.mark.claude_cli
@pytest.mark.timeout(240)
async def test_real_cli_fork_from_iteration_1_resumes_the_session_as_it_was_after_it(
    tmp_path: Path, claude: str
) -> None:
    """A parent loop does three turns in one session (context = "continue"); a fork
    from iteration 1 runs `--resume PARENT --resume-session-at UUID --fork-session`
    with iteration 1's last assistant message: its first request holds turn 1's
    history only, not the turns the parent's session had after it."""
    from gitrepo import make_repo

    from supervisor.durable import durable_supervisor
    from supervisor.worktree import prepare_worktrees

    make_repo(tmp_path / "repo")
    replies = [text(f"Answer {n}.", when=main_turn) for n in ("one", "two", "three", "four")]
    with FakeAnthropic(replies) as server:
        config = load(
            tmp_path,
            supervisor_table(tokens=2_000_000),
            cc_agent_table(claude, server, tmp_path / "home"),
            loop(
                "fix",
                "cc",
                prompt="Go on.",
                workspace={"repo": "repo", "worktree": True},
                context="continue",
                done_marker="ALL-DONE",
                max_iterations=3,
                stuck={"same_failure": 0, "same_output": 0, "oscillation": False},
            ),
        )
        prepare_worktrees(config)
        async with (
            durable_supervisor(config, exit_when_idle=False) as sup,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(sup.run)
            await wait_for(lambda: sup.runners["fix"].finished, timeout=180)
            parent = sup.runners["fix"]
            assert parent.iteration == 3, parent.reason
            await sup.fork("fix", iteration=1, name="fix-b")
            fork = sup.runners["fix-b"]
            await wait_for(lambda: fork.iteration >= 2 or fork.finished, timeout=120)
            await sup.stop("fix-b")
            tg.cancel_scope.cancel()
        main = [r for r in server.message_requests() if main_turn(r.body)]
    first_of_fork = json.dumps(main[3].body["messages"])
    assert "Answer one." in first_of_fork
    assert "Answer two." not in first_of_fork
    assert "Answer three." not in first_of_fork
    assert "Answer two." in json.dumps(main[2].body["messages"])  # the parent's went on


def _interactive_turn(
    claude: str, env: Mapping[str, str], cwd: Path, *flags: str, sent: Callable[[], bool]
) -> str:
    """Start the interactive CLI on a pty with `flags`, type one message once its
    prompt is drawn, and return what it printed until `sent()` (the message reached
    the server) or it exited."""
    import pty
    import select
    import signal

    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once, nothing else
        os.chdir(cwd)
        # Without CI: with CI=true (as CI runs us) the interactive CLI draws its prompt
        # but reads no keys, so nothing typed ever reached the server.
        base = {k: v for k, v in os.environ.items() if k != "CI"}
        os.execve(claude, [claude, *flags], {**base, **env, "TERM": "xterm-256color"})
    out, typed, typed_at, entered = b"", 0, 0.0, 0.0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # the CLI exited (EIO on Linux)
                    break
                if not data:
                    break
                out += data
                if not typed and b"for agents" in out:  # the prompt's footer is drawn
                    os.write(fd, b"Third.")
                    typed, typed_at = len(out), time.monotonic()
            # Enter only once the text is echoed: sent with it, a loaded machine's CLI
            # read both in one chunk as a paste (a newline, not a submit). Again every
            # 2 s until it reaches the server, in case the first came too early.
            echoed = typed and b"Third." in out[typed:]
            if typed and not echoed and time.monotonic() - typed_at > 3.0:
                # Drawn is not yet listening (a loaded CI's CLI was still querying the
                # terminal): what was typed was lost, so type it again.
                os.write(fd, b"Third.")
                typed_at = time.monotonic()
            if echoed and time.monotonic() - entered > 2.0:
                os.write(fd, b"\r")
                entered = time.monotonic()
            if os.waitpid(pid, os.WNOHANG)[0]:
                pid = 0
                break
            if typed and sent():
                break
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    return out.decode(errors="replace")


@pytest.mark.claude_cli
@pytest.mark.timeout(180)
async def test_real_cli_interactive_accepts_resume_session_at_but_does_not_cut(
    tmp_path: Path, claude: str, workspace: Path
) -> None:
    """What step-in into a fork runs: `claude --resume S --resume-session-at=U
    --fork-session`, interactive. 2.1.332 accepts the hidden flag there (an unknown one
    is refused at once), but only `-p` cuts the session at U: the interactive turn
    still carries the turns after U, so step-in warns (`runtime_ops.INTERACTIVE_CUT`).
    When this fails because the turn is cut, drop that warning."""
    home = tmp_path / "home"
    key = "sk-ant-dummy"
    replies = [text("First answer."), text("Second answer."), text("Third answer.")]
    with FakeAnthropic(replies) as server:
        env = offline_env(server, home)
        (home / ".claude.json").write_text(
            json.dumps(
                {
                    "hasCompletedOnboarding": True,
                    "customApiKeyResponses": {"approved": [key[-20:]], "rejected": []},
                    "projects": {str(workspace): {"hasTrustDialogAccepted": True}},
                }
            )
        )
        one = _print_turn(claude, env, workspace, "Say something.")
        sid = next(line["session_id"] for line in one if line.get("session_id"))
        _print_turn(claude, env, workspace, "Again.", f"--resume={sid}")
        at = [line["uuid"] for line in one if line.get("type") == "assistant"][-1]

        def third() -> bool:
            return any("Third." in json.dumps(r.body) for r in server.message_requests())

        unknown = _interactive_turn(
            claude, env, workspace, "--resume", sid, f"--resume-sessio-at={at}", sent=third
        )
        assert "unknown option" in unknown
        before = len(server.message_requests())
        shown = _interactive_turn(
            claude,
            env,
            workspace,
            "--resume",
            sid,
            f"--resume-session-at={at}",
            "--fork-session",
            sent=third,
        )
        assert "unknown option" not in shown
        sent = [r for r in server.message_requests()[before:] if "Third." in json.dumps(r.body)]
    assert sent, shown[-2000:]
    history = json.dumps(sent[-1].body["messages"])
    assert "First answer." in history
    assert "Second answer." in history  # not cut: what INTERACTIVE_CUT warns of
