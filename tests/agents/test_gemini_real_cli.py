"""The real Gemini CLI (npm @google/gemini-cli 0.61.0) as installed by
scripts/install-agent-clis.sh: only a `--version` smoke test so far (`kind = "gemini"`
is not built yet, see docs/agents.md). Skipped when the CLI is not installed, failed
under LOOPVISOR_REQUIRE_GEMINI_CLI=1 (CI)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cli_bins import require_cli


@pytest.mark.gemini_cli
@pytest.mark.timeout(150)  # the Node bundle takes 10-30 s to start on a loaded machine
def test_real_gemini_version(tmp_path: Path) -> None:
    gemini = require_cli("gemini", "GEMINI")
    done = subprocess.run(
        [gemini, "--version"],
        env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "0.61.0"
