"""docs/architecture.md and README's map name only modules that exist; README's table
of stuck detectors and `loopvisor init`'s starter give the defaults the code has."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from typing import Any

from helpers import REPO as ROOT

from supervisor.config.load import starter_toml
from supervisor.durations import parse_duration
from supervisor.spec import StuckSpec


def _exists(name: str) -> bool:
    """`name` is a path under the repo (`tests/echo_kind.py`) or a module path relative
    to a package (`agents/registry.py`, `kinds/`, `control/ops.py`)."""
    if (ROOT / name).exists():
        return True
    for package in ("supervisor", "tui"):
        if any(p.as_posix().endswith(name.rstrip("/")) for p in (ROOT / package).rglob("*")):
            return True
    return False


def test_architecture_doc_names_only_existing_modules() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:[\w]+/)*[\w]+\.py|(?:[\w]+/)+)`", text))
    assert len(named) > 10
    missing = sorted(n for n in named if not _exists(n))
    assert missing == []


def test_architecture_doc_names_only_existing_dotted_modules() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    dotted = set(re.findall(r"`((?:agents|config|journal|control|cli|tui)\.\w+)", text))
    missing = []
    for name in dotted:
        first, rest = name.split(".", 1)
        base = ROOT / "tui" if first == "tui" else ROOT / "supervisor" / first
        if not ((base / f"{rest}.py").exists() or (base / rest).is_dir()):
            missing.append(name)
    assert sorted(missing) == []


def test_readme_points_to_the_architecture_doc() -> None:
    assert "(docs/architecture.md)" in (ROOT / "README.md").read_text()


def _as_spec(keys: dict[str, Any]) -> dict[str, Any]:
    return {**keys, "stall": parse_duration(keys["stall"])}


def test_every_stuck_detectors_default_is_in_readme_and_the_starter() -> None:
    """Issue 11, item 8: the defaults of every detector are written where a user reads
    them, and they are the ones `StuckSpec` applies."""
    defaults = dataclasses.asdict(StuckSpec())
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("### Stuck detection", 1)[1]
    rows = re.findall(r"^\| `(\w+)` \| `([^`]+)` \|", section.split("\n#", 1)[0], re.M)
    readme = {key: tomllib.loads(f"v = {value}")["v"] for key, value in rows}
    assert _as_spec(readme) == defaults
    comment = re.search(r"^# stuck = (\{.*?\})$", starter_toml(), re.M | re.S)
    assert comment is not None, "the starter no longer shows the detectors' defaults"
    inline = re.sub(r"\n#\s*", " ", comment.group(1))
    starter = tomllib.loads(f"stuck = {inline}")["stuck"]
    assert _as_spec(starter) == defaults
