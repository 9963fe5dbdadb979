"""The command line builds the parser of the command its argv names, not all 24 (start-up,
issue 12): what argparse prints (help, usage, errors) is what the whole parser prints,
for every command and `ctl` action, and `--help` still lists every command."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from supervisor.cli import main

CTL_ACTIONS = (
    "status",
    "pause",
    "resume",
    "stop",
    "restart",
    "inject",
    "edit",
    "budget",
    "reload",
    "shutdown",
    "tail",
)
ARGVS = (
    *([c, "--help"] for c in main.COMMANDS),
    *(["ctl", a, "--help"] for a in CTL_ACTIONS),
    ["ctl"],
    ["ctl", "nope"],
    ["land"],
    ["diff", "--iteration", "x", "l"],
    ["run", "--no-such-flag"],
    ["attach", "--state-dir", "a", "--socket", "b"],
    ["ctl", "edit", "l", "--max-iterations", "many"],
    ["ctl", "budget", "--bogus"],
    ["fork", "l"],
    ["fork", "l", "--iteration", "x"],
    ["notify", "x.toml"],
    ["run", "-p"],
    ["run", "--max-iterations", "x"],
)


def _printed(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[str, str, object]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            parsed: object = vars(parser.parse_args(argv))
        except SystemExit as exc:
            parsed = exc.code
    return out.getvalue(), err.getvalue(), parsed


@pytest.mark.parametrize("argv", ARGVS, ids=" ".join)
def test_the_named_commands_parser_prints_what_the_whole_parser_prints(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    whole = _printed(main.build_parser(), argv)
    assert _printed(main.build_parser(argv[0]), argv) == whole
    assert whole[0] or whole[1]  # help or an error was printed: the comparison means something


def test_a_named_command_parses_as_with_the_whole_parser() -> None:
    for argv in (
        ["run", "x.toml", "--json", "--resume"],
        ["ctl", "edit", "l", "--usd", "3", "--socket", "s"],
        ["land", "l", "--push"],
        ["history", "l", "--iteration", "2"],
        ["fork", "l", "--iteration", "2", "--name", "n"],
        ["notify", "--test"],
        ["mcp", "--state-dir", "d"],
        ["ctl", "add", "n", "--like", "l", "--tokens", "100", "--socket", "s"],
        ["run", "-p", "do it", "--check", "pytest", "--usd", "2"],
    ):
        assert vars(main.build_parser(argv[0]).parse_args(argv)) == vars(
            main.build_parser().parse_args(argv)
        )


def test_help_lists_every_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main.main(["--help"]) == 0
    listed = [line.split()[0] for line in out.getvalue().splitlines() if line.startswith("    ")]
    assert listed == [
        "run",
        "check",
        "clean",
        "land",
        "history",
        "status",
        "init",
        "serve",
        "attach",
        "ctl",
        "diff",
        "fork",
        "notify",
        "mcp",
        "temporal",
    ]
    assert sorted(listed) == sorted(main.COMMANDS)
