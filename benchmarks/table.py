"""The figures in benchmarks/results/*.json as a Markdown table (for benchmarks/README.md).

    .venv/bin/python benchmarks/table.py [--quick]

One row per metric: benchmark, metric, value, unit, baseline, ratio, target, and
each benchmark's date and load average (1/5/15 min, before the run) under the table.
"""

from __future__ import annotations

import argparse
import json

from _common import RESULTS

ORDER = ["overhead", "scale", "idle", "api_path", "resume"]


def fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the --quick results")
    args = parser.parse_args()
    suffix = "-quick" if args.quick else ""
    rows = ["| benchmark | metric | value | unit | baseline | ratio | target |", "|---" * 7 + "|"]
    runs = []
    for name in ORDER:
        path = RESULTS / f"{name}{suffix}.json"
        if not path.exists():
            continue
        doc = json.loads(path.read_text())
        for m in doc["metrics"]:
            cells = [name, m["name"], fmt(m["value"]), m["unit"], fmt(m.get("baseline"))]
            cells += [fmt(m.get("ratio")), m.get("target", "")]
            rows.append("| " + " | ".join(cells) + " |")
        machine = doc["machine"]
        load = " / ".join(str(x) for x in machine["loadavg"])
        runs.append(
            f"- `{doc['command']}`: {machine['date']}, commit {machine['commit']}, load {load}"
        )
    print("\n".join([*rows, "", *runs]))


if __name__ == "__main__":
    main()
