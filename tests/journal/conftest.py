"""Fixtures of the journal's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from resume_support import Harness


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """`loopvisor run --json` sessions on tmp_path/loops.toml and tmp_path/state; at
    teardown nothing they started survives."""
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()
