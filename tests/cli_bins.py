"""Finding the real agent CLIs the tests run (Claude Code, Codex, Gemini): the path in
LOOPVISOR_<NAME>_BIN, else .ci/node (scripts/install-agent-clis.sh), else PATH. A
missing CLI skips its tests, unless LOOPVISOR_REQUIRE_<NAME>_CLI=1 (CI) fails them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import REPO


def cli_bin(exe: str, var: str) -> tuple[str | None, str]:
    """The CLI `exe` to run (found through LOOPVISOR_{var}_BIN), or None and why not."""
    configured = os.environ.get(f"LOOPVISOR_{var}_BIN")
    if configured:
        if Path(configured).exists():
            return configured, ""
        return None, f"LOOPVISOR_{var}_BIN={configured} does not exist"
    local = REPO / ".ci" / "node" / "node_modules" / ".bin" / exe
    if local.exists():
        return str(local), ""
    found = shutil.which(exe)
    if found:
        return found, ""
    return None, (
        f"{exe} CLI not installed: run scripts/install-agent-clis.sh "
        f"(or set LOOPVISOR_{var}_BIN / put `{exe}` on PATH)"
    )


def require_cli(exe: str, var: str) -> str:
    """The CLI's path; skips the test when absent, fails it under LOOPVISOR_REQUIRE_{var}_CLI=1."""
    path, why = cli_bin(exe, var)
    if path is None:
        if os.environ.get(f"LOOPVISOR_REQUIRE_{var}_CLI") == "1":
            pytest.fail(f"LOOPVISOR_REQUIRE_{var}_CLI=1 but {why}")
        pytest.skip(why)
    return path
