"""Record what the real Claude Code CLI prints when a subscription usage limit refuses it.

    .venv/bin/python scripts/record_usage_limit.py [CLAUDE_BIN]

Runs the CLI offline against tests/fake_anthropic.py, which answers the way the API
answers a Pro/Max account over its 5-hour or weekly window: HTTP 429 with
`anthropic-ratelimit-unified-status: rejected` and the window's reset epoch in
`anthropic-ratelimit-unified-reset`. The CLI treats the answer as a usage limit only
for a subscription login (an OAuth token, here `CLAUDE_CODE_OAUTH_TOKEN`); with an
API key the same 429 is a plain rate limit (`api_error_429.jsonl`). The lines go to
tests/data/stream_json/usage_limit_*.jsonl with the workspace path rewritten to
/work/demo (as the other recordings) and the reset epoch kept as printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fake_anthropic import FakeAnthropic, Reply, text, tool_use, usage_limit  # noqa: E402

DATA = REPO / "tests" / "data" / "stream_json"
DEFAULT_BIN = REPO / ".ci" / "node" / "node_modules" / ".bin" / "claude"
"""Where scripts/install-claude-code.sh puts the CLI (else pass its path)."""


def main_turn(body: Any) -> bool:
    return any(t.get("name") == "Write" for t in body.get("tools", []))


def record(claude: str, name: str, replies: list[Reply], workspace: Path, home: Path) -> None:
    with FakeAnthropic(replies, default=text("side call")) as server:
        env = {
            "PATH": "/usr/bin:/bin",
            "ANTHROPIC_BASE_URL": server.base_url,
            "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-dummy",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1",
            "HOME": str(home),
        }
        argv = [claude, "-p", "--output-format", "stream-json", "--verbose"]
        argv += ["--permission-mode", "acceptEdits", "--", "Create hello.txt"]
        proc = subprocess.run(
            argv, cwd=workspace, env=env, capture_output=True, text=True, timeout=300, check=False
        )
    lines = [line.replace(str(workspace), "/work/demo") for line in proc.stdout.splitlines()]
    (DATA / name).write_text("\n".join(lines) + "\n")
    result = json.loads(lines[-1])
    print(f"{name}: exit {proc.returncode}, {len(lines)} lines, result {result.get('result')!r}")


def main() -> None:
    claude = sys.argv[1] if len(sys.argv) > 1 else str(DEFAULT_BIN)
    now = int(time.time())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, window, reset, first in (
            ("usage_limit_five_hour.jsonl", "five_hour", now + 3 * 3600, None),
            ("usage_limit_weekly.jsonl", "seven_day", now + 3 * 86400, None),
            ("usage_limit_mid_turn.jsonl", "five_hour", now + 2 * 3600, "tool"),
        ):
            workspace, home = root / name / "ws", root / name / "home"
            workspace.mkdir(parents=True)
            home.mkdir()
            replies = [usage_limit(reset, window)]
            if first == "tool":
                write = tool_use(
                    "Write",
                    {"file_path": str(workspace / "hello.txt"), "content": "hello\n"},
                    preface="I'll create the file.",
                    when=main_turn,
                )
                replies = [write, usage_limit(reset, window)]
            record(claude, name, replies, workspace, home)


if __name__ == "__main__":
    main()
