"""`usage` and `model` of a command agent: errors at FILE:LINE:COL like every key."""

from __future__ import annotations

from pathlib import Path

from config_support import assert_issue, write

from supervisor.agents.kinds.command import CommandAgentSpec
from supervisor.config.load import load_config

AGENT = '[agents.mine]\nkind = "command"\ncommand = ["my-agent", "$prompt"]\n'
LOOP = '\n[[loop]]\nname = "a"\nagent = "mine"\nprompt = "x"\ndone_marker = "OK"\n'


def test_an_unknown_usage_protocol_is_an_error_at_its_key(tmp_path: Path) -> None:
    path = write(tmp_path, AGENT + 'usage = "jsonlines"\n' + LOOP)
    assert_issue(path, "usage =", "usage")
    assert_issue(path, "usage =", "json-lines")


def test_a_model_must_be_a_nonempty_string(tmp_path: Path) -> None:
    path = write(tmp_path, AGENT + 'usage = "json-lines"\nmodel = ""\n' + LOOP)
    assert_issue(path, "model =", "model: must not be empty")


def test_usage_and_model_are_read(tmp_path: Path) -> None:
    path = write(tmp_path, AGENT + 'usage = "json-lines"\nmodel = "claude-haiku-4-5"\n' + LOOP)
    spec = load_config(path).agents["mine"]
    assert isinstance(spec, CommandAgentSpec)
    assert (spec.usage, spec.model) == ("json-lines", "claude-haiku-4-5")


def test_a_model_without_the_usage_protocol_is_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, AGENT + 'model = "claude-haiku-4-5"\n' + LOOP)
    [warning] = [w for w in load_config(path).warnings if "model" in w]
    assert warning.startswith(f"{path}:4:1: warning: ")
    assert 'add usage = "json-lines" or drop model' in warning
