"""docs/architecture.md and README's map name only modules that exist."""

from __future__ import annotations

import re

from helpers import REPO as ROOT


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
