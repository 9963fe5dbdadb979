"""loops.toml → Config: real files in tmp_path. A full valid config and what it becomes,
templates, every error at once in file order (errors one by one, each at its key:
test_config_errors.py; durations, positions and odd values: test_config_parsing.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from config_support import assert_issue, issues_of, loop_config, only_issue, where, write

from supervisor.agents.kinds.anthropic import AnthropicAgentSpec
from supervisor.agents.kinds.claude_code import ClaudeCodeAgentSpec
from supervisor.agents.kinds.command import CommandAgentSpec
from supervisor.agents.kinds.sim import SimAgentSpec
from supervisor.agents.registry import KINDS
from supervisor.config.load import (
    STARTER_TOML,
    ConfigError,
    load_config,
    parse_config,
    summarize_loop,
)
from supervisor.spec import CheckSpec, Limits, LoopBudget, Price, RateLimit, StuckSpec, WorktreeSpec

# -- a full valid config -----------------------------------------------------------


def git_repo(folder: Path) -> Path:
    folder.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    return folder


FULL = """\
[supervisor]
max_concurrent = 8
state_dir = "state"

[supervisor.budget]
tokens = 2_000_000
usd = 25
wall = "4h"
cpu = "1h30m"

[supervisor.rate_limits.anthropic]
requests_per_minute = 50
tokens_per_minute = 40_000

[pricing."my-model"]
input = 2.0
output = 8.0

[agents.sonnet]
kind = "anthropic"
model = "my-model"
max_tokens = 8000
tools = ["read_file", "run"]
system_file = "system.md"
timeout = "2m"

[agents.cc]
kind = "claude-code"
args = ["--permission-mode", "acceptEdits"]
stall = false
env = { IS_SANDBOX = "1" }

[agents.other]
kind = "command"
command = ["codex", "exec", "--loop=$loop", "$prompt"]
timeout = "10m"

[agents.sim]
kind = "sim"
behavior = "oscillate"
files = { "a.txt" = "done" }
alt_files = { "a.txt" = "alt" }

[templates.base]
agent = "cc"
context = "continue"
budget = { tokens = 500_000, usd = 5.0, retries = 1 }
stuck = { same_failure = 4, stall = "3m" }
checks = [{ run = "pytest -q", min_passed = 1, timeout = "5m" }]

[templates.fix-tests]
extends = "base"
max_iterations = 12
prompt = "Fix it. Iteration $iteration of $max_iterations.\\n$check_output"

[[loop]]
name = "fix-auth"
extends = "fix-tests"
workspace = { repo = "repo", worktree = true }
budget = { usd = 3.0, wall = "30m" }
stuck = { cost_spike = false }
on_stuck = "stop"
schedule = "*/30 * * * *"
max_runs = 3
catch_up = "once"

[[loop]]
name = "docs"
agent = "sonnet"
prompt_file = "prompts/docs.md"
workspace = "work"
done_marker = "DONE"
schedule = "every 10m"
checks = [
  { run = ["python", "-m", "mypy", "."], pattern = "Success", not_pattern = "error" },
  { run = "python -m mypy --strict .", expect_exit = 0 },
  { name = "lint", run = "ruff check ." },
]
"""


def test_full_config_round_trips_into_specs(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    (tmp_path / "work").mkdir()
    write(tmp_path, "You are careful.\n", "system.md")
    write(tmp_path, "Write docs for $loop in $workspace.\n", "prompts/docs.md")
    config = load_config(write(tmp_path, FULL))

    sup = config.supervisor
    assert sup.state_dir == tmp_path.resolve() / "state"
    assert sup.max_concurrent == 8
    assert sup.budget == Limits(tokens=2_000_000, usd=25.0, wall=14400.0, cpu=5400.0)
    assert dict(sup.rate_limits) == {"anthropic": RateLimit(50, 40_000)}
    assert config.pricing == {"my-model": Price(2.0, 8.0, cache_write=2.5, cache_read=0.2)}
    assert config.warnings == ()

    assert config.agents["sonnet"] == AnthropicAgentSpec(
        name="sonnet",
        model="my-model",
        max_tokens=8000,
        tools=("read_file", "run"),
        system="You are careful.\n",
        timeout=120.0,
    )
    cc = config.agents["cc"]
    assert isinstance(cc, ClaudeCodeAgentSpec)
    assert (cc.args, cc.stall, cc.timeout, dict(cc.env)) == (
        ("--permission-mode", "acceptEdits"),
        None,
        1800.0,
        {"IS_SANDBOX": "1"},
    )
    assert config.agents["other"] == CommandAgentSpec(
        name="other", command=("codex", "exec", "--loop=$loop", "$prompt"), timeout=600.0
    )
    sim = config.agents["sim"]
    assert isinstance(sim, SimAgentSpec)
    assert (sim.behavior, dict(sim.files), dict(sim.alt_files)) == (
        "oscillate",
        {"a.txt": "done"},
        {"a.txt": "alt"},
    )

    fix = config.loop("fix-auth")
    assert (fix.agent, fix.extends, fix.context, fix.max_iterations) == (
        "cc",
        "fix-tests",
        "continue",
        12,
    )
    assert fix.prompt == "Fix it. Iteration $iteration of $max_iterations.\n$check_output"
    # budget merges key by key across the chain; retries come from the base template
    assert fix.budget == LoopBudget(Limits(tokens=500_000, usd=3.0, wall=1800.0), retries=1)
    assert fix.stuck == StuckSpec(same_failure=4, stall=180.0, cost_spike=None)
    assert fix.checks == (CheckSpec(name="pytest", run="pytest -q", min_passed=1, timeout=300.0),)
    assert fix.worktree == WorktreeSpec(repo=repo.resolve(), branch="loopvisor/{loop}")
    assert fix.workspace == tmp_path.resolve() / "state" / "worktrees" / "fix-auth"
    assert (fix.on_stuck, fix.schedule, fix.max_runs, fix.catch_up) == (
        "stop",
        "*/30 * * * *",
        3,
        "once",
    )

    docs = config.loop("docs")
    assert docs.prompt == "Write docs for $loop in $workspace.\n"
    assert docs.prompt_file == (tmp_path / "prompts" / "docs.md").resolve()
    assert docs.workspace == (tmp_path / "work").resolve()
    assert docs.worktree is None
    assert (docs.done_marker, docs.schedule, docs.budget) == ("DONE", "every 10m", LoopBudget())
    assert [c.name for c in docs.checks] == ["mypy", "mypy-2", "lint"]
    assert docs.checks[0].run == ("python", "-m", "mypy", ".")
    assert (docs.checks[0].pattern, docs.checks[0].not_pattern) == ("Success", "error")


def test_paths_resolve_against_the_config_folder_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cfg" / "ws").mkdir(parents=True)
    path = write(
        tmp_path / "cfg",
        loop_config(
            'name = "a"\nagent = "sim"\nprompt = "x"\nworkspace = "ws"\ndone_marker = "OK"\n'
        ),
    )
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("cfg/loops.toml"))
    assert config.loop("a").workspace == (tmp_path / "cfg" / "ws").resolve()
    assert config.supervisor.state_dir == (tmp_path / "cfg" / ".loopvisor").resolve()
    assert config.path == path.resolve()


def test_state_dir_argument_overrides_the_file(tmp_path: Path) -> None:
    text = '[supervisor]\nstate_dir = "s"\n' + loop_config(
        'name = "a"\nagent = "sim"\nprompt = "x"\ndone_marker = "OK"\nworkspace = { repo = "r" }\n'
    )
    git_repo(tmp_path / "r")
    config = parse_config(text, tmp_path / "loops.toml", state_dir=tmp_path / "elsewhere")
    assert config.supervisor.state_dir == (tmp_path / "elsewhere").resolve()
    assert config.loop("a").workspace == (tmp_path / "elsewhere").resolve() / "worktrees" / "a"


def test_worktree_false_works_in_the_repo_itself(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "r")
    path = write(
        tmp_path,
        loop_config(
            'name = "a"\nagent = "sim"\nprompt = "x"\ndone_marker = "OK"\n'
            'workspace = { repo = "r", worktree = false }\n'
        ),
    )
    loop = load_config(path).loop("a")
    assert (loop.workspace, loop.worktree) == (repo.resolve(), None)


def test_two_loops_cannot_share_a_worktree_branch(tmp_path: Path) -> None:
    git_repo(tmp_path / "r")
    body = 'agent = "sim"\nprompt = "x"\ndone_marker = "OK"\n'
    path = write(
        tmp_path,
        loop_config('name = "a"\n' + body + 'workspace = { repo = "r", branch = "fix" }\n')
        + '[[loop]]\nname = "b"\n'
        + body
        + 'workspace = { repo = "r", branch = "fix" }\n',
    )
    assert_issue(path, 'branch = "fix"', 'loops "a" and "b" would share', nth=1)


def test_starter_file_validates_and_runs_offline_agents(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, STARTER_TOML))
    assert config.loops
    assert config.warnings == ()
    assert all(isinstance(a, SimAgentSpec) for a in config.agents.values())
    for loop in config.loops:
        assert loop.checks or loop.done_marker


def test_starter_file_runs_to_success_offline(tmp_path: Path) -> None:
    """What `loopvisor init` writes must work before the user has any API key."""
    path = write(tmp_path, STARTER_TOML)
    done = subprocess.run(
        [sys.executable, "-m", "supervisor", "run", "--headless", "--quiet", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
        env={**os.environ, "ANTHROPIC_API_KEY": ""},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "loopvisor-demo" / "hello.txt").read_text() == "Hello, world\n"


def test_summarize_loop_is_one_informative_line(tmp_path: Path) -> None:
    git_repo(tmp_path / "repo")
    (tmp_path / "work").mkdir()
    write(tmp_path, "s", "system.md")
    write(tmp_path, "p", "prompts/docs.md")
    config = load_config(write(tmp_path, FULL))
    line = summarize_loop(config, config.loop("fix-auth"))
    assert "\n" not in line
    assert line.startswith("fix-auth  agent=cc(claude-code)  max_iterations=12  checks=1  ")
    assert "budget: 500k tokens, $3.00, 30m wall" in line
    assert "exit: checks" in line
    assert "extends=fix-tests" in line
    docs = summarize_loop(config, config.loop("docs"))
    assert "agent=sonnet(anthropic my-model)" in docs
    assert 'exit: checks + "DONE"' in docs


# -- warnings ------------------------------------------------------------------------


def test_command_agent_that_never_gets_the_prompt_is_warned(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[agents.c]\nkind = "command"\ncommand = ["echo", "hi"]\n'
        + loop_config('name = "a"\nagent = "c"\nprompt = "x"\ndone_marker = "OK"\n'),
    )
    line, col = where(path, "command =")
    assert load_config(path).warnings == (
        f'{path}:{line}:{col}: warning: agent "c" never receives the prompt: add $prompt or '
        "$prompt_file to command, or set stdin = true",
    )


def test_unpriced_model_under_a_usd_limit_is_warned(tmp_path: Path) -> None:
    agents = '[agents.a]\nkind = "anthropic"\nmodel = "mystery-1"\n'
    body = 'name = "l"\nagent = "a"\nprompt = "x"\ndone_marker = "OK"\n'
    path = write(tmp_path, agents + loop_config(body + "budget = { usd = 1 }\n"))
    (warning,) = load_config(path).warnings
    line, col = where(path, "model")
    assert warning.startswith(f"{path}:{line}:{col}: warning: ")
    assert "USD budget enforced from an explicit [pricing] entry only" in warning
    # priced through [pricing], or no USD limit at all: nothing to warn about
    priced = agents + '[pricing."mystery-1"]\ninput = 1\noutput = 2\n'
    path = write(tmp_path, priced + loop_config(body + "budget = { usd = 1 }\n"))
    assert load_config(path).warnings == ()
    path = write(tmp_path, agents + loop_config(body))
    assert load_config(path).warnings == ()


# -- templates -----------------------------------------------------------------------


def test_error_inherited_from_a_template_points_at_the_template(tmp_path: Path) -> None:
    extra = (
        '[templates.t]\nagent = "sim"\nprompt = "x"\n'
        'checks = [{ run = "a", timeout = "-" }]\nbudget = { tokens = -1 }\n'
    )
    path = write(
        tmp_path,
        loop_config('name = "a"\nextends = "t"\n', extra=extra)
        + '[[loop]]\nname = "b"\nextends = "t"\nbudget = { usd = 1 }\n',
    )
    issues = issues_of(path)  # reported once although two loops inherit them
    assert [(i.line, i.col) for i in issues] == [where(path, "timeout"), where(path, "tokens")]


def test_loop_key_overrides_template_and_errors_point_at_the_loop(tmp_path: Path) -> None:
    extra = '[templates.t]\nagent = "sim"\nprompt = "x"\ndone_marker = "OK"\nmax_iterations = 3\n'
    path = write(
        tmp_path, loop_config('name = "a"\nextends = "t"\nmax_iterations = 0\n', extra=extra)
    )
    assert_issue(path, "max_iterations = 0", "must be greater than 0")


def test_template_with_unknown_key_is_reported_even_unused(tmp_path: Path) -> None:
    extra = '[templates.t]\nagnet = "sim"\nname = "x"\n'
    path = write(
        tmp_path,
        loop_config('name = "a"\nagent = "sim"\nprompt = "x"\ndone_marker = "OK"\n', extra=extra),
    )
    issues = issues_of(path)
    assert [(i.line, i.col) for i in issues] == [where(path, "agnet"), where(path, 'name = "x"')]
    assert 'did you mean "agent"' in issues[0].message


# -- many at once, and the shape of the error ------------------------------------------


def test_all_errors_are_reported_at_once_in_file_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        [supervisor]
        max_concurent = 4

        [agents.cc]
        kind = "claude-code"
        timeout = "soon"

        [[loop]]
        name = "a"
        agent = "c"
        prompt = "$iter"
        budget = { tokens = 0, usd = "1" }

        [[loop]]
        name = "a"
        agent = "cc"
        prompt = "x"
        max_iterations = true
        """,
    )
    issues = issues_of(path)
    assert [i.line for i in issues] == [2, 6, 8, 10, 11, 12, 12, 14, 15, 18]
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == "\n".join(str(i) for i in issues)
    assert str(issues[0]) == (
        f'{path}:2:1: unknown key supervisor.max_concurent (did you mean "max_concurrent"?)'
    )


def test_unreadable_config_is_a_config_error(tmp_path: Path) -> None:
    issue = only_issue(tmp_path / "absent.toml")
    assert (issue.line, issue.col) == (1, 1)
    assert "cannot read config" in issue.message


def test_empty_config_asks_for_a_loop(tmp_path: Path) -> None:
    assert "no loops defined" in only_issue(write(tmp_path, "# nothing\n")).message


def test_agent_keys_follow_the_spec_dataclasses() -> None:
    for name, kind in KINDS.items():
        assert {f.name for f in fields(kind.spec)} - {"name"} <= kind.keys()
        # `kind_of(spec)` finds a spec's kind by its `kind` field: it must be the name.
        assert kind.spec.__dataclass_fields__["kind"].default == name
