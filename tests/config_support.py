"""loops.toml files for the config tests: written to a folder (`write`), loaded until
they fail (`issues_of`, `only_issue`), and an issue checked to sit exactly at the
FILE:LINE:COL of the text it names (`where`, `assert_issue`).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from supervisor.config.load import ConfigError, ConfigIssue, load_config

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
