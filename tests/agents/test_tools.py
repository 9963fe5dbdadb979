"""Built-in workspace tools: confinement, error results, the run tool's process handling."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from supervisor.agents.tools import TOOL_NAMES, ToolError, Workspace, tool_definitions

pytestmark = pytest.mark.anyio


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    return Workspace(root, run_timeout=5.0)


def test_definitions_are_api_tool_schemas() -> None:
    defs = tool_definitions(["write_file", "read_file", "write_file"])
    assert [d["name"] for d in defs] == ["write_file", "read_file"]
    for d in tool_definitions(TOOL_NAMES):
        assert d["input_schema"]["type"] == "object"
        assert d["description"]
    with pytest.raises(ValueError, match="unknown tool"):
        tool_definitions(["rm_rf"])
    # Copies: a caller mutating one cannot change the next agent's tools.
    defs[0]["name"] = "x"
    assert tool_definitions(["write_file"])[0]["name"] == "write_file"


async def test_write_then_read_and_list(ws: Workspace) -> None:
    out = await ws.call("write_file", {"path": "src/pkg/mod.py", "content": "x = 1\n"})
    assert not out.is_error
    assert out.output == "wrote 6 bytes to src/pkg/mod.py"
    assert (ws.root / "src/pkg/mod.py").read_text() == "x = 1\n"
    read = await ws.call("read_file", {"path": "./src/pkg/mod.py"})
    assert (read.output, read.is_error) == ("x = 1\n", False)
    listing = await ws.call("list_files", {})
    assert listing.output.splitlines() == ["src/", "src/pkg/", "src/pkg/mod.py"]
    flat = await ws.call("list_files", {"path": "src", "recursive": False})
    assert flat.output.splitlines() == ["src/pkg/"]


async def test_long_file_is_cut_with_an_offset_hint(ws: Workspace) -> None:
    (ws.root / "big.txt").write_text("a" * 150_000)
    first = await ws.call("read_file", {"path": "big.txt"})
    assert "read on with offset=100000" in first.output
    rest = await ws.call("read_file", {"path": "big.txt", "offset": 100_000})
    assert rest.output == "a" * 50_000


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../escape.txt", "'..'"),
        ("a/../../escape.txt", "'..'"),
        ("/etc/passwd", "absolute"),
        ("~/x", "absolute"),
        ("", "non-empty"),
    ],
)
async def test_paths_outside_are_rejected(ws: Workspace, path: str, why: str) -> None:
    for name, args in (
        ("write_file", {"path": path, "content": "pwned"}),
        ("read_file", {"path": path}),
        ("list_files", {"path": path}),
    ):
        out = await ws.call(name, args)
        assert out.is_error, (name, path)
        assert why in out.output
    assert not (ws.root.parent / "escape.txt").exists()


async def test_symlinks_escaping_the_workspace_are_rejected(ws: Workspace) -> None:
    outside = ws.root.parent / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside, ws.root / "link")
    os.symlink(outside / "secret.txt", ws.root / "secret-link")
    os.symlink(outside / "missing.txt", ws.root / "dangling")
    for name, args in (
        ("read_file", {"path": "link/secret.txt"}),
        ("read_file", {"path": "secret-link"}),
        ("write_file", {"path": "link/new.txt", "content": "x"}),
        ("write_file", {"path": "dangling", "content": "x"}),
        ("list_files", {"path": "link"}),
    ):
        out = await ws.call(name, args)
        assert out.is_error, args
        assert "outside the workspace" in out.output
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    # A symlink that stays inside is fine.
    (ws.root / "real.txt").write_text("inside")
    os.symlink(ws.root / "real.txt", ws.root / "alias.txt")
    assert (await ws.call("read_file", {"path": "alias.txt"})).output == "inside"
    with pytest.raises(ToolError):
        ws.resolve("link")


async def test_errors_are_results_not_exceptions(ws: Workspace) -> None:
    cases = [
        ("read_file", {"path": "nope.txt"}, "no such file"),
        ("read_file", {}, "non-empty string"),
        ("write_file", {"path": "a.txt"}, "content must be a string"),
        ("write_file", {"path": ".", "content": ""}, "directory"),
        ("list_files", {"path": "nope"}, "not a directory"),
        ("run", {"command": ""}, "non-empty"),
        ("delete_everything", {}, "unknown tool"),
    ]
    for name, args, text in cases:
        out = await ws.call(name, args)
        assert out.is_error, name
        assert text in out.output
    (ws.root / "bin.dat").write_bytes(b"\x00\x01\x02")
    assert "binary" in (await ws.call("read_file", {"path": "bin.dat"})).output


async def test_disabled_tools_are_unknown(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, enabled=("read_file",))
    out = await ws.call("run", {"command": "echo hi"})
    assert out.is_error
    assert "available: read_file" in out.output


async def test_run_in_the_workspace(ws: Workspace) -> None:
    ok = await ws.call("run", {"command": "pwd; echo out; echo err >&2"})
    assert not ok.is_error
    lines = ok.output.splitlines()
    assert lines[0] == "exit code 0"
    assert lines[1] == str(ws.root.resolve())
    assert set(lines[2:]) == {"out", "err"}
    bad = await ws.call("run", {"command": "exit 3"})
    assert bad.is_error
    assert bad.output == "exit code 3"


async def test_run_times_out_and_kills_the_group(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, run_timeout=0.5)
    marker = tmp_path / "survivor"
    out = await ws.call("run", {"command": f"(sleep 2; touch {marker}) & sleep 30"})
    assert out.is_error
    assert out.output.startswith("timed out after 0.5s")
    await anyio.sleep(2.5)
    assert not marker.exists()  # the background child died with its group


async def test_run_does_not_see_the_api_key(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-supersecret")
    ws.env["LOOPVISOR_LOOP"] = "demo"
    out = await ws.call("run", {"command": "env"})
    assert "sk-ant-supersecret" not in out.output
    assert "ANTHROPIC_API_KEY" not in out.output
    assert "LOOPVISOR_LOOP=demo" in out.output
