"""`loopvisor diff LOOP [--iteration N]`: a worktree loop's changes as a patch.

A fork or an added loop is found in the journal (`findloop`). Without `--iteration`:
the loop's branch against its base (the commit its worktree was created from), i.e.
everything its checkpoint commits hold. With it: that iteration's checkpoint commit
against its parent, found in the journal (`--run` picks a run; default: the newest
run with the loop).

Piped (`| less`, `| git apply`, `> fix.patch`) the output is git's patch byte for byte,
binary files included (`--binary`), so it applies. On a terminal it is coloured (file
headers bold, `@@` cyan, `+` green, `-` red; none under `NO_COLOR`) and, like every
other plain output, what the agent wrote is shown, not obeyed: control characters
print as `\\x1b`. Notes (no changes, uncommitted files not shown) go to stderr.
Exit codes: 0 shown (or nothing to show), 3 an unknown loop, a loop without a
worktree, an iteration the journal does not have, or git failing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Iterator
from typing import IO

from supervisor.cli.findloop import find_loop
from supervisor.config.load import load_config
from supervisor.difflines import DiffKind, line_kinds
from supervisor.gitdiff import (
    DiffError,
    branch_range,
    commit_range,
    open_patch,
    uncommitted_paths,
)
from supervisor.gitexec import GitError
from supervisor.runtime import EXIT_OK, EXIT_USAGE
from supervisor.spec import LoopSpec
from supervisor.textsafe import decode, for_terminal

RESET = "\x1b[0m"
COLOURS: dict[DiffKind, str] = {
    DiffKind.FILE: "\x1b[1m",
    DiffKind.HUNK: "\x1b[36m",
    DiffKind.ADD: "\x1b[32m",
    DiffKind.DEL: "\x1b[31m",
    DiffKind.MARKER: "\x1b[33m",
}


def _note(text: str) -> None:
    print(for_terminal(text), file=sys.stderr)


def cmd_diff(args: argparse.Namespace) -> int:
    config = load_config(args.config, state_dir=args.state_dir)
    loop = find_loop(config, args.loop)
    if loop is None:
        _note(f"no loop named {args.loop!r} in {args.config} or the journal")
        return EXIT_USAGE
    try:
        if args.iteration is None:
            left, right = branch_range(loop)
        else:
            from supervisor.journal.reader import JournalReader  # not on `run`'s path

            with JournalReader(config.supervisor.state_dir) as reader:
                row = reader.iteration_commit(loop.name, args.iteration, args.run_id)
            if row is None or row.commit is None:
                _note(f"{loop.name}: iteration {args.iteration} made no checkpoint commit")
                return EXIT_OK
            left, right = commit_range(loop, row.parent, row.commit)
        wrote = _print_patch(loop, left, right, sys.stdout.isatty())
        pending = uncommitted_paths(loop) if args.iteration is None else 0
    except (DiffError, GitError) as exc:
        _note(str(exc))
        return EXIT_USAGE
    if not wrote:
        _note(f"{loop.name}: no changes between {left[:10]} and {right[:10]}")
    if pending:
        _note(
            f"{loop.name}: the worktree has {pending} uncommitted path(s) (the iteration running"
            " now): not in this diff"
        )
    return EXIT_OK


def _print_patch(loop: LoopSpec, left: str, right: str, terminal: bool) -> bool:
    """The patch on stdout; True when it was not empty."""
    sys.stdout.flush()
    with open_patch(loop, left, right, binary=not terminal) as stream:
        if not terminal:
            out = sys.stdout.buffer
            first = stream.read(1)
            out.write(first)
            shutil.copyfileobj(stream, out)
            out.flush()
            return bool(first)
        colour = not os.environ.get("NO_COLOR")
        wrote = False
        for kind, line in line_kinds(_lines(stream)):
            wrote = True
            text = for_terminal(line)
            start = COLOURS.get(kind, "") if colour else ""
            sys.stdout.write(f"{start}{text}{RESET if start else ''}\n")
        sys.stdout.flush()
        return wrote


def _lines(stream: IO[bytes]) -> Iterator[str]:
    for raw in stream:
        yield decode(raw).removesuffix("\n").removesuffix("\r")
