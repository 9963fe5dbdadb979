"""A valid loops.toml is not scanned for key positions (issue 12: start-up and resume of
1,000 loops): the scan that names FILE:LINE:COL runs at the first issue. Counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config import _schema
from supervisor.config._tomlpos import Positions, key_positions
from supervisor.config.load import ConfigError, parse_config

VALID = (
    '[agents.sim]\nkind = "sim"\n\n[[loop]]\nname = "a"\nagent = "sim"\nprompt = "p"\n'
    'done_marker = "DONE"\n'
)


def _counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    scans: list[str] = []

    def scan(src: str) -> Positions:
        scans.append(src)
        return key_positions(src)

    monkeypatch.setattr(_schema, "key_positions", scan)
    return scans


def test_a_valid_config_is_not_scanned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scans = _counted(monkeypatch)
    parse_config(VALID, tmp_path / "loops.toml")
    assert scans == []


def test_an_issue_is_placed_by_one_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scans = _counted(monkeypatch)
    text = VALID + "max_iterations = -1\nbogus = 1\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "loops.toml")
    assert len(scans) == 1
    assert [(i.line, i.col) for i in caught.value.issues] == [(9, 1), (10, 1)]
