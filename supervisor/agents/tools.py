"""Built-in workspace tools for API agents: read_file, write_file, list_files, run.

The model only ever names paths relative to the loop's workspace. A path is refused
when it is absolute, contains `..`, or resolves (through symlinks) outside the
workspace; every failure comes back as an error result for the model to read, never
as an exception for the loop. `run` executes a shell command in the workspace, in
its own process group with a timeout (supervisor/process.py), in the allow-listed
environment of `childenv` plus what `Workspace.env` adds: the provider's API key is
not in it, so the model cannot print it into the transcript.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from supervisor.process import run_captured

TOOL_NAMES = ("read_file", "write_file", "list_files", "run")

MAX_READ_CHARS = 100_000
MAX_RUN_OUTPUT = 30_000
MAX_LIST_ENTRIES = 1_000
_SKIP_DIRS = frozenset({".git", "__pycache__", ".venv", "node_modules"})

_SCHEMAS: dict[str, dict[str, Any]] = {
    "read_file": {
        "name": "read_file",
        "description": (
            "Read a UTF-8 text file from the workspace. `path` is relative to the "
            "workspace root. Long files are cut; use `offset` (a character index) to "
            "read further."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "File path relative to the workspace"},
                "offset": {"type": "integer", "minimum": 0, "description": "Start character"},
            },
            "required": ["path"],
        },
    },
    "write_file": {
        "name": "write_file",
        "description": (
            "Create or overwrite a text file in the workspace with `content` (parent "
            "directories are created). `path` is relative to the workspace root."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "File path relative to the workspace"},
                "content": {"type": "string", "description": "The complete new file content"},
            },
            "required": ["path", "content"],
        },
    },
    "list_files": {
        "name": "list_files",
        "description": (
            "List files under a directory of the workspace (default: its root), "
            "recursively; directories end with '/'."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "Directory relative to the workspace"},
                "recursive": {"type": "boolean", "description": "Descend into subdirectories"},
            },
        },
    },
    "run": {
        "name": "run",
        "description": (
            "Run a shell command (sh -c) in the workspace root and return its exit code "
            "and combined stdout/stderr. It is killed after a timeout."
        ),
        "input_schema": {
            "type": "object",
            "properties": {"command": {"type": "string", "description": "The shell command"}},
            "required": ["command"],
        },
    },
}


class ToolError(Exception):
    """A tool call the model got wrong; its message goes back as an error result."""


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    output: str
    is_error: bool = False


def tool_definitions(names: Sequence[str]) -> list[dict[str, Any]]:
    """The Messages API `tools` list for these built-in tool names."""
    unknown = [n for n in names if n not in _SCHEMAS]
    if unknown:
        raise ValueError(f"unknown tool(s) {', '.join(unknown)}; known: {', '.join(TOOL_NAMES)}")
    return [_copy(_SCHEMAS[n]) for n in dict.fromkeys(names)]


def _copy(schema: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(schema)


class Workspace:
    """Executes tool calls confined to one workspace directory."""

    def __init__(
        self,
        root: Path,
        *,
        enabled: Sequence[str] = TOOL_NAMES,
        run_timeout: float = 120.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`env` is added to the allow-listed environment of `run` commands."""
        self.root = Path(root)
        self.enabled = tuple(enabled)
        self.run_timeout = run_timeout
        self.env = dict(env or {})

    # -- paths -----------------------------------------------------------------
    def resolve(self, raw: object, *, default: str | None = None) -> Path:
        """The real path for a model-supplied relative path, or ToolError."""
        if raw is None and default is not None:
            raw = default
        if not isinstance(raw, str) or not raw.strip():
            raise ToolError("path must be a non-empty string relative to the workspace")
        if "\x00" in raw:
            raise ToolError("path contains a NUL byte")
        rel = PurePosixPath(raw.replace("\\", "/"))
        if rel.is_absolute() or raw.startswith("~") or os.path.isabs(raw):
            raise ToolError(f"{raw!r}: absolute paths are not allowed; use a workspace path")
        if ".." in rel.parts:
            raise ToolError(f"{raw!r}: '..' is not allowed; paths stay inside the workspace")
        root = self.root.resolve()
        target = (root / Path(*rel.parts)) if rel.parts else root
        real = target.resolve()
        if real != root and root not in real.parents:
            raise ToolError(f"{raw!r}: resolves outside the workspace (symlink)")
        return real

    def relative(self, path: Path) -> str:
        rel = path.relative_to(self.root.resolve())
        return rel.as_posix() or "."

    # -- dispatch --------------------------------------------------------------
    async def call(self, name: str, tool_input: Mapping[str, Any]) -> ToolOutcome:
        """Run one tool call; every failure becomes an error outcome."""
        if name not in self.enabled:
            return ToolOutcome(f"unknown tool {name!r}; available: {', '.join(self.enabled)}", True)
        if not isinstance(tool_input, Mapping):
            return ToolOutcome("tool input must be a JSON object", True)
        try:
            if name == "read_file":
                return self._read(tool_input)
            if name == "write_file":
                return self._write(tool_input)
            if name == "list_files":
                return self._list(tool_input)
            return await self._run(tool_input)
        except ToolError as exc:
            return ToolOutcome(str(exc), True)
        except OSError as exc:
            return ToolOutcome(f"{name} failed: {exc.strerror or exc}", True)

    # -- tools -----------------------------------------------------------------
    def _read(self, args: Mapping[str, Any]) -> ToolOutcome:
        path = self.resolve(args.get("path"))
        if not path.is_file():
            raise ToolError(f"{args.get('path')!r}: no such file")
        offset = args.get("offset") or 0
        if not isinstance(offset, int) or offset < 0:
            raise ToolError("offset must be a non-negative integer")
        data = path.read_bytes()
        if b"\x00" in data[:8192]:
            raise ToolError(f"{args.get('path')!r}: binary file ({len(data)} bytes)")
        text = data.decode("utf-8", errors="replace")
        chunk = text[offset : offset + MAX_READ_CHARS]
        end = offset + len(chunk)
        if end < len(text):
            chunk += f"\n[... cut at character {end} of {len(text)}; read on with offset={end}]"
        return ToolOutcome(chunk)

    def _write(self, args: Mapping[str, Any]) -> ToolOutcome:
        path = self.resolve(args.get("path"))
        content = args.get("content")
        if not isinstance(content, str):
            raise ToolError("content must be a string")
        if path == self.root.resolve() or path.is_dir():
            raise ToolError(f"{args.get('path')!r} is a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Re-check after creating parents: nothing may have appeared that leads outside.
        self.resolve(args.get("path"))
        data = content.encode("utf-8")
        path.write_bytes(data)
        return ToolOutcome(f"wrote {len(data)} bytes to {self.relative(path)}")

    def _list(self, args: Mapping[str, Any]) -> ToolOutcome:
        base = self.resolve(args.get("path"), default=".")
        if not base.is_dir():
            raise ToolError(f"{args.get('path')!r}: not a directory")
        recursive = args.get("recursive", True) is not False
        entries: list[str] = []
        truncated = False
        for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            here = Path(dirpath)
            for d in dirnames:
                entries.append(self.relative(here / d) + "/")
            for f in sorted(filenames):
                entries.append(self.relative(here / f))
            if len(entries) > MAX_LIST_ENTRIES:
                truncated = True
                break
            if not recursive:
                break
        entries.sort()
        out = "\n".join(entries[:MAX_LIST_ENTRIES]) or "(empty)"
        if truncated:
            out += f"\n[... more than {MAX_LIST_ENTRIES} entries]"
        return ToolOutcome(out)

    async def _run(self, args: Mapping[str, Any]) -> ToolOutcome:
        command = args.get("command")
        if not isinstance(command, str) or not command.strip():
            raise ToolError("command must be a non-empty string")
        result = await run_captured(
            ["/bin/sh", "-c", command],
            cwd=self.root,
            env=self.env,
            timeout=self.run_timeout,
            max_output=MAX_RUN_OUTPUT,
        )
        if result.timed_out:
            head = f"timed out after {self.run_timeout:g}s (killed)"
            return ToolOutcome(f"{head}\n{result.output}".rstrip(), True)
        head = f"exit code {result.exit_code}"
        return ToolOutcome(f"{head}\n{result.output}".rstrip(), result.exit_code != 0)
