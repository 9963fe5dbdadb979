"""Dataclass methods are compiled once and kept beside the bytecode (`cli.codecache`,
issue 12: ~640 compiles were a third of `run`'s import time on Python 3.11).

Untimed: a second start compiles nothing; classes made through the cache behave as
classes made without it; a broken cache file is an empty cache; nothing is written
where bytecode would not be.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import PY, cli_env

from supervisor.cli import codecache

PROBE = (
    "import json, sys\n"
    "import supervisor.cli.main\n"
    "from supervisor.cli import codecache\n"
    "c = codecache._installed\n"
    "print(json.dumps({'compiled': c.compiled, 'used': len(c.used),"
    " 'path': str(codecache.cache_path())}))\n"
)


def _start(prefix: Path, *flags: str) -> dict[str, object]:
    env = cli_env(PYTHONPYCACHEPREFIX=str(prefix))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    done = subprocess.run(
        [PY, *flags, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_the_second_start_compiles_no_dataclass_method(tmp_path: Path) -> None:
    first = _start(tmp_path)
    path = Path(str(first["path"]))
    assert path.is_relative_to(tmp_path)
    assert path.exists()
    assert first["compiled"] == first["used"]
    assert int(str(first["used"])) > 100
    second = _start(tmp_path)
    assert second["compiled"] == 0
    assert second["used"] == first["used"]


def test_nothing_is_written_where_bytecode_is_not(tmp_path: Path) -> None:
    first = _start(tmp_path, "-B")
    assert int(str(first["compiled"])) > 100
    assert not Path(str(first["path"])).exists()


def _make(cache: codecache.CodeCache) -> type:
    real = dataclasses.exec  # type: ignore[attr-defined]
    dataclasses.exec = cache.exec  # type: ignore[attr-defined]
    try:

        @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
        class Point:
            x: int
            y: list[int] = dataclasses.field(default_factory=list)

    finally:
        dataclasses.exec = real  # type: ignore[attr-defined]
    return Point


@pytest.fixture(autouse=True)
def _writes_bytecode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.dont_write_bytecode", False)


def test_classes_made_from_cached_code_behave_as_compiled_ones(tmp_path: Path) -> None:
    path = tmp_path / "cache.marshal"
    fresh = codecache.CodeCache(path)
    a = _make(fresh)
    fresh.save()
    cached = codecache.CodeCache(path)
    b = _make(cached)
    assert fresh.compiled > 0
    assert cached.compiled == 0
    for cls in (a, b):
        p = cls(x=1)
        assert p == cls(x=1, y=[])
        assert p != cls(x=2)
        assert repr(p).endswith("Point(x=1, y=[])")
        with pytest.raises(dataclasses.FrozenInstanceError):
            p.x = 3
        with pytest.raises(TypeError):
            cls(1)
        assert cls(x=1).y is not cls(x=1).y


@pytest.mark.parametrize("content", [b"", b"\x00garbage", b"\xe3" * 40])
def test_a_broken_cache_file_is_an_empty_cache(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "cache.marshal"
    path.write_bytes(content)
    cache = codecache.CodeCache(path)
    assert cache.known == {}
    _make(cache)
    cache.save()
    assert codecache.CodeCache(path).known.keys() == cache.used.keys()
    assert oct(os.stat(path).st_mode & 0o022) == oct(0)
