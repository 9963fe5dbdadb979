"""The headless core must stay importable without any UI library."""

import subprocess
import sys


def test_importing_supervisor_loads_no_ui_library() -> None:
    code = (
        "import sys, supervisor, supervisor.cli, supervisor.runtime, supervisor.headless;"
        "import supervisor.config, supervisor.loop, supervisor.agents.sim, supervisor.agents.command;"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich', 'tui'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == "", f"supervisor imported UI modules: {out.stdout.strip()}"
