"""The headless core must stay importable without any UI library."""

import subprocess
import sys
from pathlib import Path

from helpers import REPO

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


def test_a_run_without_api_loops_never_loads_the_anthropic_sdk(tmp_path: Path) -> None:
    """The agent-kind registry is lazy: config reads every kind's declaration, but an
    implementation (and its SDK) loads only when `build_agent` builds a loop of it."""
    api = tmp_path / "api.toml"
    api.write_text(
        '[agents.api]\nkind = "anthropic"\nmodel = "m"\n'
        '[[loop]]\nname = "a"\nagent = "api"\nprompt = "p"\ndone_marker = "OK"\n'
    )
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from supervisor.agents import AgentContext, build_agent\n"
        "from supervisor.config.load import load_config\n"
        "import supervisor.cli.main, supervisor.runtime, supervisor.durable\n"
        "for path in sys.argv[1:]:\n"
        "    config = load_config(Path(path))\n"
        "    ctx = AgentContext(state_dir=Path(path).parent)\n"
        "    for loop in config.loops:\n"
        "        build_agent(config.agent_for(loop), loop, ctx)\n"
        "    print('anthropic' in sys.modules)\n"
    )
    demo = REPO / "loops.toml"
    out = subprocess.run(
        [sys.executable, "-c", code, str(demo), str(api)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.split() == ["False", "True"]
