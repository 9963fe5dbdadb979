"""Reading loops.toml's pieces: durations, the TOML key-position finder, and odd values
anywhere (wrong types, huge numbers, control characters...) that must give config
errors, never a traceback; a reserved loop name, a missing config.
"""

from __future__ import annotations

import textwrap
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest
from helpers import run_cli

from supervisor.agents.registry import KINDS
from supervisor.config._tomlpos import key_positions
from supervisor.config.load import ConfigError, load_config, parse_config, parse_duration
from supervisor.durations import format_duration
from supervisor.spec import CheckSpec, LoopSpec

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
    "workspace": ("repo", "worktree", "branch", "base", "include_uncommitted"),
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
