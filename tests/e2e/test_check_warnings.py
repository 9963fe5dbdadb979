"""`loopvisor check` warns, with the fix, about an agent program that is not installed
and a model with no known price; warnings keep the exit code 0."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from helpers import cli_env, run_cli, write_config

from supervisor.agents.kinds.claude_code import KIND as CLAUDE_CODE
from supervisor.agents.kinds.command import KIND as COMMAND
from supervisor.agents.registry import KINDS

LOOP = '[[loop]]\nname = "a"\nagent = "{agent}"\nprompt = "x"\ndone_marker = "OK"\n'


def check(tmp_path: Path, toml: str) -> tuple[int, str, str]:
    path = write_config(tmp_path, toml)
    r = run_cli("check", path, cwd=tmp_path)
    return r.returncode, r.stdout, r.stderr


def test_every_kind_that_runs_a_program_declares_it() -> None:
    assert CLAUDE_CODE.binary is not None
    assert COMMAND.binary is not None
    assert KINDS["sim"].binary is None
    assert KINDS["anthropic"].binary is None


def test_a_claude_code_agent_whose_program_is_missing_is_a_warning_with_the_fix(
    tmp_path: Path,
) -> None:
    toml = (
        '[agents.cc]\nkind = "claude-code"\ncommand = "claude-not-installed-here"\n'
        + LOOP.format(agent="cc")
    )
    code, out, err = check(tmp_path, toml)
    assert code == 0, err
    assert "ok, 1 loop(s)" in out
    assert (
        'warning: agent "cc" (claude-code): program "claude-not-installed-here" is not on '
        "PATH: install it (npm install -g @anthropic-ai/claude-code), or set command to its "
        "full path"
    ) in err


def test_a_command_agent_whose_argv0_is_missing_is_a_warning(tmp_path: Path) -> None:
    toml = (
        '[agents.mine]\nkind = "command"\ncommand = ["no-such-agent-xyz", "$prompt"]\n'
        + LOOP.format(agent="mine")
    )
    code, _, err = check(tmp_path, toml)
    assert code == 0, err
    assert 'agent "mine" (command): program "no-such-agent-xyz" is not on PATH' in err
    relative = toml.replace("no-such-agent-xyz", "./agent.sh")
    code, _, err = check(tmp_path, relative)
    assert 'program "./agent.sh" is not an executable file' in err
    script = tmp_path / "agent.sh"
    script.write_text("#!/bin/sh\necho OK\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    code, _, err = check(tmp_path, relative)
    assert (code, "warning" in err) == (0, False), err


def test_a_program_on_path_is_not_warned_about(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "claude"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    toml = '[agents.cc]\nkind = "claude-code"\n' + LOOP.format(agent="cc")
    path = write_config(tmp_path, toml)
    env = cli_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    r = subprocess.run(
        [sys.executable, "-m", "supervisor", "check", str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr


def test_a_model_with_no_known_price_is_a_warning_with_the_pricing_table_to_add(
    tmp_path: Path,
) -> None:
    toml = '[agents.api]\nkind = "anthropic"\nmodel = "mystery-model-1"\n' + LOOP.format(
        agent="api"
    )
    code, _, err = check(tmp_path, toml)
    assert code == 0, err
    assert 'model "mystery-model-1" of agent "api" has no known price' in err
    assert '    [pricing."mystery-model-1"]\n    input = 0.0' in err
    priced = toml + '[pricing."mystery-model-1"]\ninput = 1\noutput = 2\n'
    code, _, err = check(tmp_path, priced)
    assert (code, "no known price" in err) == (0, False), err


def test_a_metered_command_agents_model_is_priced_too(tmp_path: Path) -> None:
    toml = (
        '[agents.mine]\nkind = "command"\ncommand = ["cat", "$prompt_file"]\n'
        'usage = "json-lines"\nmodel = "mystery-model-2"\n' + LOOP.format(agent="mine")
    )
    code, _, err = check(tmp_path, toml)
    assert code == 0, err
    assert 'model "mystery-model-2" of agent "mine" has no known price' in err
    assert "is not on PATH" not in err
