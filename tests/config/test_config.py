"""loops.toml → Config: real files in tmp_path, exact FILE:LINE:COL for every error kind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest
from helpers import run_cli

from supervisor.agents.kinds.anthropic import AnthropicAgentSpec
from supervisor.agents.kinds.claude_code import ClaudeCodeAgentSpec
from supervisor.agents.kinds.command import CommandAgentSpec
from supervisor.agents.kinds.sim import SimAgentSpec
from supervisor.agents.registry import KINDS
from supervisor.config._tomlpos import key_positions
from supervisor.config.load import (
    STARTER_TOML,
    ConfigError,
    ConfigIssue,
    load_config,
    parse_config,
    parse_duration,
    summarize_loop,
)
from supervisor.config.rules import prompt_problems
from supervisor.durations import format_duration
from supervisor.spec import (
    CheckSpec,
    Limits,
    LoopBudget,
    LoopSpec,
    Price,
    RateLimit,
    StuckSpec,
    WorktreeSpec,
)

MINIMAL_AGENT = '[agents.sim]\nkind = "sim"\n'


def write(folder: Path, text: str, name: str = "loops.toml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def issues_of(path: Path) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.issues


def where(path: Path, needle: str, nth: int = 0) -> tuple[int, int]:
    """Line and column of the nth occurrence of `needle` in the file (test-side search)."""
    text = path.read_text()
    offset = -1
    for _ in range(nth + 1):
        offset = text.index(needle, offset + 1)
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def only_issue(path: Path) -> ConfigIssue:
    issues = issues_of(path)
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


def assert_issue(path: Path, needle: str, message: str, nth: int = 0) -> None:
    """Exactly one issue, at `needle`, whose message contains `message`."""
    issue = only_issue(path)
    assert (issue.file, issue.line, issue.col) == (path, *where(path, needle, nth)), str(issue)
    assert message in issue.message, str(issue)


def loop_config(body: str, extra: str = "") -> str:
    return MINIMAL_AGENT + extra + "\n[[loop]]\n" + textwrap.dedent(body)


# -- durations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("5m", 300),
        ("2h", 7200),
        ("1h30m", 5400),
        ("500ms", 0.5),
        (12, 12),
        (2.5, 2.5),
        ("1.5h", 5400),
        ("1d", 86400),
        ("45", 45),
    ],
)
def test_parse_duration_accepts_units_and_plain_seconds(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5 minutes", "", "m5", "1h-30m", True, None, [1], "nan"])
def test_parse_duration_rejects_garbage_with_a_hint(bad: object) -> None:
    with pytest.raises(ValueError, match="90s"):
        parse_duration(bad)


def test_format_duration_is_short() -> None:
    assert [format_duration(s) for s in (0.5, 90, 1800, 5400, 0)] == [
        "500ms",
        "1m30s",
        "30m",
        "1h30m",
        "0s",
    ]


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


# -- errors, each at its key ----------------------------------------------------------


def test_toml_syntax_error_takes_line_and_column_from_tomllib(tmp_path: Path) -> None:
    path = write(tmp_path, "[supervisor]\nmax_concurrent = 4\n[supervisor]\n")
    issue = only_issue(path)
    assert (issue.line, issue.col) == (3, 12)
    assert issue.message.startswith("invalid TOML: Cannot declare")
    path = write(tmp_path, 'a = 1\nb = "unterminated')  # "at end of document"
    issue = only_issue(path)
    assert (issue.line, issue.col, issue.message) == (2, 18, "invalid TOML: Unterminated string")


def test_unknown_key_suggests_the_closest_valid_one(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        loop_config(
            'name = "a"\nagent = "sim"\nprompt = "x"\ndone_marker = "OK"\nmax_iteration = 3\n'
        ),
    )
    assert_issue(
        path,
        "max_iteration",
        'unknown key max_iteration in [[loop]] (did you mean "max_iterations"?)',
    )


def test_unknown_keys_in_nested_tables_are_found(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        loop_config(
            'name = "a"\nagent = "sim"\nprompt = "x"\n'
            'checks = [{ run = "true" }, { run = "true", timout = "1m" }]\n'
            "budget = { tokens = 5, usdd = 1 }\n"
            '[[loops]]\nname = "b"\n'
        ),
    )
    issues = issues_of(path)
    assert [(i.line, i.col) for i in issues] == [
        where(path, "timout"),
        where(path, "usdd"),
        where(path, "loops"),
    ]
    assert 'did you mean "timeout"' in issues[0].message
    assert 'did you mean "usd"' in issues[1].message
    assert 'did you mean "loop"' in issues[2].message


def test_wrong_type_names_expected_and_actual(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        loop_config(
            'name = "a"\nagent = "sim"\nprompt = "x"\ndone_marker = "OK"\nmax_iterations = "ten"\n'
        ),
    )
    assert_issue(path, "max_iterations", 'max_iterations: expected an integer, got string "ten"')


def test_booleans_are_not_integers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[supervisor]\nmax_concurrent = true\n"
        + loop_config('name = "a"\nagent = "sim"\nprompt = "x"\ndone_marker = "OK"\n'),
    )
    assert_issue(path, "max_concurrent", "expected an integer, got boolean true")


def test_unknown_agent_suggests_a_defined_one(tmp_path: Path) -> None:
    path = write(
        tmp_path, loop_config('name = "a"\nagent = "simm"\nprompt = "x"\ndone_marker = "OK"\n')
    )
    assert_issue(path, "agent =", 'unknown agent "simm" (did you mean "sim"?)')


def test_missing_agent_points_at_the_loop_header(tmp_path: Path) -> None:
    path = write(tmp_path, loop_config('name = "a"\nprompt = "x"\ndone_marker = "OK"\n'))
    assert_issue(path, "loop]]", 'loop "a": missing required key agent')


def test_unknown_template_suggests_a_defined_one(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        loop_config(
            'name = "a"\nextends = "fix-test"\n', extra='[templates.fix-tests]\nagent = "sim"\n'
        ),
    )
    assert_issue(path, "extends", 'unknown template "fix-test" (did you mean "fix-tests"?)')


def test_cyclic_extends_names_the_cycle_once(tmp_path: Path) -> None:
    extra = (
        '[templates.a]\nextends = "b"\n[templates.b]\nextends = "c"\n[templates.c]\nextends = "a"\n'
    )
    path = write(
        tmp_path,
        loop_config('name = "x"\nextends = "b"\n', extra=extra)
        + '[[loop]]\nname = "y"\nextends = "c"\n',
    )
    assert_issue(path, 'extends = "b"', "cyclic extends: a -> b -> c -> a")


def test_unknown_placeholder_in_inline_prompt(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        loop_config(
            'name = "a"\nagent = "sim"\ndone_marker = "OK"\nprompt = "Try $iteraton, pay $5"\n'
        ),
    )
    issues = issues_of(path)
    assert [(i.line, i.col) for i in issues] == [where(path, "prompt =")] * 2
    assert "unknown placeholder $iteraton (did you mean $iteration?)" in issues[0].message
    assert "write $$ for a literal $" in issues[1].message


def test_unknown_placeholder_in_prompt_file_points_into_that_file(tmp_path: Path) -> None:
    prompt = write(tmp_path, "Hello.\nLast: $last_outptu\n", "prompts/p.md")
    path = write(
        tmp_path,
        loop_config(
            'name = "a"\nagent = "sim"\ndone_marker = "OK"\nprompt_file = "prompts/p.md"\n'
        ),
    )
    issue = only_issue(path)
    assert (issue.file.resolve(), issue.line, issue.col) == (prompt.resolve(), 2, 7)
    assert "$last_outptu (did you mean $last_output?)" in issue.message


def test_missing_prompt_file_is_reported_at_its_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        loop_config('name = "a"\nagent = "sim"\ndone_marker = "OK"\nprompt_file = "nope.md"\n'),
    )
    assert_issue(path, "prompt_file", 'prompt_file: cannot read "nope.md"')


def test_prompt_and_prompt_file_together_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "p", "p.md")
    path = write(
        tmp_path,
        loop_config(
            'name = "a"\nagent = "sim"\ndone_marker = "OK"\nprompt = "x"\nprompt_file = "p.md"\n'
        ),
    )
    assert_issue(path, "prompt_file", "use either prompt or prompt_file")


def test_a_loops_prompt_file_replaces_its_templates_prompt(tmp_path: Path) -> None:
    write(tmp_path, "from file", "p.md")
    path = write(
        tmp_path,
        loop_config(
            'name = "a"\nextends = "t"\nprompt_file = "p.md"\n',
            extra='[templates.t]\nagent = "sim"\nprompt = "inline"\ndone_marker = "OK"\n',
        ),
    )
    assert load_config(path).loop("a").prompt == "from file"


def test_prompt_rules_for_edits() -> None:
    assert prompt_problems("Iteration $iteration of ${max_iterations}, $$5") == []
    assert [str(p) for p in prompt_problems("ok\n  $chek_output")] == [
        "prompt: line 2, column 3: unknown placeholder $chek_output (did you mean"
        " $check_output?); known: $check_output, $iteration, $last_output, $loop,"
        " $max_iterations, $workspace"
    ]
    assert "literal $" in prompt_problems("costs $ 5")[0].message


def test_duplicate_loop_name_points_at_the_second(tmp_path: Path) -> None:
    body = 'name = "a"\nagent = "sim"\nprompt = "x"\ndone_marker = "OK"\n'
    path = write(tmp_path, loop_config(body) + "[[loop]]\n" + body)
    assert_issue(path, 'name = "a"', 'duplicate loop name "a"', nth=1)


def test_invalid_loop_name(tmp_path: Path) -> None:
    path = write(
        tmp_path, loop_config('name = "-a b"\nagent = "sim"\nprompt = "x"\ndone_marker = "OK"\n')
    )
    assert_issue(path, "name", "not a valid loop name")


def test_loop_without_exit_condition(tmp_path: Path) -> None:
    path = write(tmp_path, loop_config('name = "x"\nagent = "sim"\nprompt = "p"\n'))
    assert_issue(path, "loop]]", 'loop "x" has no exit condition: add checks or a done_marker')


@pytest.mark.parametrize(
    ("line", "needle", "message"),
    [
        ("budget = { tokens = 0 }", "tokens", "budget.tokens: must be greater than 0, got 0"),
        ("budget = { usd = -1.5 }", "usd", "budget.usd: must be greater than 0, got -1.5"),
        ('budget = { wall = "0s" }', "wall", "budget.wall: must be a duration greater than 0"),
        ("budget = { cpu = -5 }", "cpu", "budget.cpu: must be a duration greater than 0"),
        ("budget = { retries = -1 }", "retries", "budget.retries: must be at least 0, got -1"),
        ("max_iterations = 0", "max_iterations", "must be greater than 0, got 0"),
        (
            'checks = [{ run = "x", timeout = -1 }]',
            "timeout",
            "checks[0].timeout: must be a duration greater than 0",
        ),
        (
            'checks = [{ run = "x", pattern = "(" }]',
            "pattern",
            "checks[0].pattern: invalid regular expression",
        ),
        ("checks = [{ run = [] }]", "run", "checks[0].run: must not be empty"),
        ('schedule = "61 * * * *"', "schedule", 'invalid cron expression "61 * * * *"'),
        ('schedule = "* * * *"', "schedule", "expected 5 fields"),
        ('schedule = "every soon"', "schedule", 'such as "every 10m"'),
        ('prompt_file = "empty.md"', "prompt_file", '"empty.md" is empty'),
        ('context = "fressh"', "context", 'got string "fressh" (did you mean "fresh"?)'),
        ("stuck = { similarity = 1.5 }", "similarity", "must be at most 1, got 1.5"),
        ("stuck = { cost_spike = 0.5 }", "cost_spike", "must be greater than 1"),
        ('stuck = { stall = "soon" }', "stall", "or false, got string"),
        ('workspace = "missing"', "workspace", 'directory "missing" does not exist'),
        ('workspace = { repo = "." }', "repo", "is not a git repository"),
        ('workspace = { repo = ".", branch = "x/{name}" }', "branch", "{loop} placeholder"),
    ],
)
def test_bad_loop_values_are_reported_at_their_key(
    tmp_path: Path, line: str, needle: str, message: str
) -> None:
    path = write(
        tmp_path,
        loop_config(f'name = "a"\nagent = "sim"\nprompt = "x"\ndone_marker = "OK"\n{line}\n'),
    )
    if "branch" in line:
        (tmp_path / ".git").mkdir()
    if "prompt_file" in line:  # replaces the inline prompt
        path.write_text(path.read_text().replace('prompt = "x"\n', ""))
        write(tmp_path, " \n", "empty.md")
    assert_issue(path, needle, message, nth=1 if needle == "name" else 0)


@pytest.mark.parametrize(
    ("agent", "needle", "message"),
    [
        ('kind = "sim"\nbehavior = "stuk"', "behavior", '(did you mean "stuck"?)'),
        ('kind = "sim"\nfiles = { "a" = 1 }', "files", "expected a table of strings"),
        ('kind = "simulated"', "kind", 'expected one of "sim", "command"'),
        (
            "seed = 1",
            "x]",
            f'agent "x" (kind is one of {", ".join(KINDS)}): missing required key kind',
        ),
        ('kind = "command"\ncommand = []', "command =", "command: must not be empty"),
        (
            'kind = "command"\ncommand = ["a", "$promt"]',
            '"$promt"',
            "command[1]: unknown placeholder $promt (did you mean $prompt?)",
        ),
        (
            'kind = "command"\nstdin = true\ncommand = ["a", "$prompt"]',
            '"$prompt"',
            "$prompt cannot be used with stdin = true",
        ),
        ('kind = "anthropic"', "x]", "missing required key model"),
        (
            'kind = "anthropic"\nmodel = "m"\ntools = ["read_file", "write_fle"]',
            '"write_fle"',
            'unknown tool "write_fle" (did you mean "write_file"?)',
        ),
        (
            'kind = "anthropic"\nmodel = "m"\nsystem = "a"\nsystem_file = "s.md"',
            "system_file",
            "use either system or system_file",
        ),
        ('kind = "anthropic"\nmodel = "m"\nmax_tokens = 0', "max_tokens", "greater than 0"),
        (
            'kind = "anthropic"\nmodel = "m"\ntool_timeout = "-1s"',
            "tool_timeout",
            'expected a duration such as "90s"',
        ),
        ('kind = "claude-code"\ntimeout = 0', "timeout", "must be a duration greater than 0"),
        ('kind = "claude-code"\nmodle = "x"', "modle", 'did you mean "model"?'),
        ('kind = "claude-code"\nargs = ["-v", 2]', "2]", "args[1]: expected a string, got integer"),
    ],
)
def test_bad_agent_values_are_reported_at_their_key(
    tmp_path: Path, agent: str, needle: str, message: str
) -> None:
    write(tmp_path, "sys", "s.md")
    path = write(
        tmp_path,
        "[agents.x]\n"
        + agent
        + "\n"
        + loop_config('name = "a"\nagent = "sim"\nprompt = "x"\ndone_marker = "OK"\n'),
    )
    assert_issue(path, needle, message)


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


def test_supervisor_and_pricing_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        [supervisor]
        max_concurrent = 0
        [supervisor.budget]
        tokens = 1.5
        wall = "forever"
        [supervisor.rate_limits.antropic]
        requests_per_minute = 5
        [pricing.m]
        input = 1
        outptu = 2
        [[loop]]
        name = "a"
        agent = "sim"
        prompt = "x"
        done_marker = "OK"
        [agents.sim]
        kind = "sim"
        """,
    )
    found = [(i.line, i.col, i.message) for i in issues_of(path)]
    assert found == [
        (2, 1, "supervisor.max_concurrent: must be greater than 0, got 0"),
        (4, 1, "supervisor.budget.tokens: expected an integer, got float 1.5"),
        (
            5,
            1,
            'supervisor.budget.wall: expected a duration such as "90s", "5m", "1h30m", "500ms" '
            'or a number of seconds, got string "forever"',
        ),
        (6, 25, 'unknown key supervisor.rate_limits.antropic (did you mean "anthropic"?)'),
        (8, 10, 'price of "m": missing required key pricing."m".output'),
        (10, 1, 'unknown key pricing."m".outptu (did you mean "output"?)'),
    ]


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


# -- the position finder -----------------------------------------------------------


def test_positions_skip_strings_and_follow_headers_and_arrays() -> None:
    src = textwrap.dedent('''\
        [a."b c"]  # comment with [x]
        k = 1
        s = """
        [[loop]]
        name = "fake" \\"""
        """
        [[loop]]
        d.e = 'q'
        arr = [
          { x = 1 },  # one
          { y = [1, 2] },
        ]
        [[loop.checks]]
        run = "y"
        [[loop.checks]]
        run = "z"
        [[loop]]
        ''')
    pos = key_positions(src)
    assert pos[("a", "b c")] == (1, 4)
    assert pos[("a", "b c", "s")] == (3, 1)
    assert pos[("loop", 0)] == (7, 3)
    assert pos[("loop", 0, "d", "e")] == (8, 3)
    assert pos[("loop", 0, "arr", 1, "y", 1)] == (11, 13)
    assert pos[("loop", 0, "checks", 1, "run")] == (16, 1)
    assert pos[("loop", 1)] == (17, 3)


# -- never a traceback ---------------------------------------------------------------

ODD_VALUES = [
    "5",
    "-1",
    "0",
    "1.5",
    "inf",
    "nan",
    "true",
    '"x"',
    '""',
    '"-"',
    "[]",
    "[1]",
    '["a", 1]',
    "{}",
    "{ a = 1 }",
    '[{ a = "b" }]',
    "1979-05-27",
    "07:32:00",
]
BASE_SECTIONS: dict[str, dict[str, str]] = {
    "supervisor": {},
    "supervisor.budget": {"tokens": "1000"},
    'pricing."m"': {"input": "1", "output": "2"},
    "agents.sim": {"kind": '"sim"'},
    "agents.cmd": {"kind": '"command"', "command": '["x", "$prompt"]'},
    "agents.api": {"kind": '"anthropic"', "model": '"m"'},
    "agents.cc": {"kind": '"claude-code"'},
    "templates.t": {"agent": '"sim"', "prompt": '"p"'},
    "[loop]": {"name": '"a"', "extends": '"t"', "done_marker": '"OK"'},
}
NESTED = {
    "budget": ("tokens", "usd", "wall", "cpu", "retries"),
    "stuck": ("same_failure", "same_output", "similarity", "oscillation", "stall", "cost_spike"),
    "workspace": ("repo", "worktree", "branch"),
}


def render(sections: dict[str, dict[str, str]]) -> str:
    out = []
    for header, keys in sections.items():
        out.append(f"[{header}]")
        out += [f"{key} = {value}" for key, value in keys.items()]
    return "\n".join(out) + "\n"


def odd_slots() -> list[tuple[str, str, str]]:
    """(section, key, rendered value) for every key the schema knows, each odd value."""
    slots: list[tuple[str, str, str]] = []
    agent_sections = {
        "sim": "agents.sim",
        "command": "agents.cmd",
        "anthropic": "agents.api",
        "claude-code": "agents.cc",
    }
    keys: dict[str, list[str]] = {
        "": ["supervisor", "pricing", "agents", "templates", "loop"],
        "supervisor": ["max_concurrent", "state_dir", "budget", "rate_limits"],
        "supervisor.budget": ["tokens", "usd", "wall", "cpu"],
        'pricing."m"': ["input", "output", "cache_write", "cache_read"],
        "templates.t": ["extends", "agent", "prompt", "budget", "checks", "stuck"],
        "[loop]": sorted(f.name for f in fields(LoopSpec)),
    }
    for kind, section in agent_sections.items():
        keys[section] = sorted(KINDS[kind].keys())
    for section, names in keys.items():
        for name in names:
            slots += [(section, name, value) for value in ODD_VALUES]
    for table, subkeys in NESTED.items():
        for name in subkeys:
            slots += [("[loop]", table, f"{{ {name} = {v} }}") for v in ODD_VALUES]
    for name in sorted(f.name for f in fields(CheckSpec)):
        slots += [("[loop]", "checks", f'[{{ run = "true", {name} = {v} }}]') for v in ODD_VALUES]
    slots += [("agents.sim", "files", f'{{ "a" = {v} }}') for v in ODD_VALUES]
    return slots


def test_odd_values_anywhere_give_config_errors_never_a_traceback(tmp_path: Path) -> None:
    """Every known key, fed values of every TOML type: a Config or a ConfigError, and the
    position finder knows where every key of the document is."""
    outcomes = {"ok": 0, "error": 0}
    for section, key, value in odd_slots():
        sections = {name: dict(keys) for name, keys in BASE_SECTIONS.items()}
        if section:
            sections[section][key] = value
            text = render(sections)
        else:
            text = f"{key} = {value}\n" + render(sections)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            continue  # e.g. a scalar where a table header follows
        positions = key_positions(text)
        assert set(_paths(data)) <= set(positions), text
        try:
            parse_config(text, tmp_path / "loops.toml")
        except ConfigError as exc:
            issues = exc.issues
        else:
            issues = []
        outcomes["error" if issues else "ok"] += 1
    assert outcomes["ok"] > 20
    assert outcomes["error"] > 1000


def _paths(value: object, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found: list[tuple[str | int, ...]] = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def test_loop_named_global_is_reserved(tmp_path: Path) -> None:
    """'global' names the run-wide ledger in budget messages and events."""
    path = tmp_path / "loops.toml"
    path.write_text(
        '[agents.a]\nkind = "sim"\n\n[[loop]]\nname = "global"\nagent = "a"\n'
        'prompt = "p"\ndone_marker = "DONE"\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:5:1: name: " in str(err.value)
    assert "reserved" in str(err.value)


def test_a_missing_config_suggests_init(tmp_path: Path) -> None:
    """Issue 11: a new user without a loops.toml is told how to get one."""
    r = run_cli("run", "--headless", cwd=tmp_path)
    assert r.returncode == 3
    assert "No such file or directory" in r.stderr
    assert "`loopvisor init` writes a commented starter loops.toml" in r.stderr
    assert "Traceback" not in r.stderr
