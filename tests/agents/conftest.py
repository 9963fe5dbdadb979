"""Fixtures of the agents' tests: a workspace folder, the fake Messages API, the fake
`claude` executable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from claude_support import FakeClaude
from fake_anthropic import FakeAnthropic


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """tmp_path/ws, where the agent works."""
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def server() -> Iterator[FakeAnthropic]:
    """A started fake Messages API with nothing scripted (its default is a short text)."""
    with FakeAnthropic() as srv:
        yield srv


@pytest.fixture
def fake(tmp_path: Path) -> FakeClaude:
    """The fake `claude` executable in tmp_path/fake; `fake.script(...)` sets its turns."""
    return FakeClaude(tmp_path)
