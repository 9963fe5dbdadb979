"""One status table: `status`, `ctl status` and the run summary lay out the same columns
(cells defined once), each exactly as it always printed; the console's loop table takes
its shared columns' cells from the same definitions."""

from __future__ import annotations

import dataclasses
import io

from console_support import demo_snapshot

from supervisor import events as ev
from supervisor.api import RunSnapshot
from supervisor.cli.remote import format_status as ctl_status
from supervisor.headless import HeadlessPrinter
from supervisor.journal.reader import LoopStatusRow, RunRow
from supervisor.journal.render import format_status
from supervisor.status_table import ITERATION_OF, LOOP, TOKENS, USD
from tui.widgets.loop_table import COLUMNS, row_cells

NAMES = ("a", "fizzbuzz", "a-very-long-loop-name", "esc\x1bname")


def test_status_from_the_journal() -> None:
    run = RunRow("rid", "c", 0.0, None, None, "", NAMES, 1, 0.1, True)
    rows = [
        LoopStatusRow(n, "running", f"r\x1b{i}", i, i * 1000, i * 0.5, 0.0)
        for i, n in enumerate(NAMES)
    ]
    lines = format_status(run, rows).split("\n")[1:]
    assert lines == [
        "LOOP                 STATE      ITER     TOKENS       USD  REASON",
        "a                    running       0          0    0.0000  r\\x1b0",
        "fizzbuzz             running       1      1,000    0.5000  r\\x1b1",
        "a-very-long-loop-name running       2      2,000    1.0000  r\\x1b2",
        "esc\\x1bname          running       3      3,000    1.5000  r\\x1b3",
        "total                                     6,000    3.0000",
    ]


def test_ctl_status_of_a_live_snapshot() -> None:
    snap = demo_snapshot()
    lines = ctl_status(snap, {"pid": 7}).split("\n")[1:-1]
    assert lines == [
        "loop             state           iter     tokens       usd  reason",
        "fizzbuzz         running          3/6      1,234    0.0037  agent turn 3/6",
        "parser         ! stuck            3/6      7,100    0.0037  same_failure: same check"
        " failure 3× — test_duration.test_compound",
        "slugify          succeeded        2/6      1,234    0.0037  the check passed in"
        " iteration 2",
        "release-notes    waiting         1/10      1,700    0.0037  rate-limited",
        "greeter        ! paused           1/4          0    0.0000  paused by the operator",
    ]


def test_the_run_summary() -> None:
    results = tuple(
        ev.LoopResult(
            name=n, state="failed", iterations=i, tokens=i * 12345, usd=i * 0.01, reason=f"w{i}"
        )
        for i, n in enumerate(NAMES)
    )
    out = io.StringIO()
    printer = HeadlessPrinter(stream=out)
    printer.print_event(ev.RunStarted(run_id="r", config="c", loops=NAMES))
    printer.print_event(ev.RunFinished(loops=results, tokens=1, usd=0.5, wall_s=2, exit_code=1))
    lines = out.getvalue().split("\n")[2:-2]
    assert lines == [
        "loop                   state      iter    tokens       usd  reason",
        "a                      failed        0         0    0.0000  w0",
        "fizzbuzz               failed        1    12,345    0.0100  w1",
        "a-very-long-loop-name  failed        2    24,690    0.0200  w2",
        "esc\\x1bname            failed        3    37,035    0.0300  w3",
    ]


def test_the_consoles_table_shares_the_cells() -> None:
    loop = RunSnapshot.from_dict(demo_snapshot().to_dict()).loops[0]
    keys = [column[0] for column in COLUMNS]
    cells = dict(zip(keys, row_cells(loop, None, wide=False), strict=True))
    for column in (LOOP, ITERATION_OF, TOKENS, USD):
        assert cells[column.key][0] == column.compact(loop)
    assert (cells["iter"][0], cells["tokens"][0], cells["usd"][0]) == ("3/6", "1.2k", "$0.0037")


def test_a_metric_loops_best_score_leads_its_reason_in_status_and_ctl_status() -> None:
    run = RunRow("rid", "c", 0.0, None, None, "", ("tune",), 1, 0.1, True)
    row = LoopStatusRow("tune", "running", "agent turn 5/20", 5, 100, 0.01, 0.0, 0.91)
    assert format_status(run, [row]).split("\n")[2].endswith("best 0.91 · agent turn 5/20")
    snap = demo_snapshot()
    tuned = dataclasses.replace(snap.loops[0], best_score=0.91, best_iteration=2)
    live = dataclasses.replace(snap, loops=(tuned,))
    line = ctl_status(live, {"pid": 7}).split("\n")[2]
    assert line.endswith("best 0.91 · agent turn 3/6")
