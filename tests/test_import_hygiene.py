"""The headless core must stay importable without any UI library."""

import subprocess
import sys

CORE_MODULES = (
    "supervisor",
    "supervisor.cli.main",
    "supervisor.runtime",
    "supervisor.headless",
    "supervisor.config.load",
    "supervisor.loop",
    "supervisor.durable",
    "supervisor.journal.writer",
    "supervisor.agents.sim",
    "supervisor.agents.command",
    "supervisor.agents.anthropic",
    "supervisor.agents.claude_code",
)


def test_importing_supervisor_loads_no_ui_library() -> None:
    code = (
        f"import importlib, sys\nfor m in {CORE_MODULES!r}: importlib.import_module(m)\n"
        "print(' '.join(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('textual', 'rich', 'tui'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "", f"supervisor imported UI modules: {out.stdout.strip()}"
