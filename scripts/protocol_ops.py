"""Rewrite the table of control ops in docs/protocol.md from their definitions.

    .venv/bin/python scripts/protocol_ops.py           # rewrite the table in place
    .venv/bin/python scripts/protocol_ops.py --check   # exit 1 when it is out of date

The table sits between two marker comments; everything else in the file is prose
written by hand. tests/control/test_control_ops.py runs the same comparison as `--check`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from supervisor.control.ops import markdown_table  # noqa: E402

DOC = ROOT / "docs" / "protocol.md"
BEGIN = "<!-- ops table: generated from supervisor/control/ops.py by scripts/protocol_ops.py -->"
END = "<!-- end of ops table -->"


def with_table(text: str, table: str) -> str:
    """`text` with the part between the markers replaced by `table`."""
    head, found, rest = text.partition(BEGIN + "\n")
    if not found or END not in rest:
        raise SystemExit(f"{DOC}: the markers around the ops table are missing")
    _old, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{table}{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether it is current")
    args = parser.parse_args()
    text = DOC.read_text(encoding="utf-8")
    new = with_table(text, markdown_table())
    if args.check:
        if new != text:
            print(f"{DOC} is out of date: run scripts/protocol_ops.py", file=sys.stderr)
            return 1
        return 0
    if new != text:
        DOC.write_text(new, encoding="utf-8")
        print(f"rewrote the ops table in {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
