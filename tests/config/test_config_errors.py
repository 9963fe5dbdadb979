"""loops.toml errors, each at its key: TOML syntax, unknown keys (with the closest valid
one suggested), wrong types, unknown agents, templates and placeholders, bad values of
loops, agents, the supervisor and pricing; each with its exact FILE:LINE:COL.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from config_support import assert_issue, issues_of, loop_config, only_issue, where, write

from supervisor.agents.registry import KINDS
from supervisor.config.load import load_config
from supervisor.config.rules import prompt_problems

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
        " $check_output?); known: $after_output, $check_output, $iteration, $last_output, $loop,"
        " $max_iterations, $score_history, $workspace"
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
