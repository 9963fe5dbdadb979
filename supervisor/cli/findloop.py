"""A loop by its name, for the commands that work on one loop's worktree beside or
after a run (`diff`, `clean`).

A loop of loops.toml is found there. A fork (`loopvisor fork`) is not in loops.toml:
it is rebuilt as `--resume` rebuilds it, from its parent's spec (itself possibly a
fork) and the newest `forked` record of its name in the journal (`fork.fork_spec`),
so its worktree, branch and base are the ones the fork was made with.
"""

from __future__ import annotations

from supervisor.events import LoopForked
from supervisor.journal.schema import JOURNAL_NAME, JournalError
from supervisor.spec import Config, LoopSpec

FORK_DEPTH_MAX = 50
"""A fork of a fork of ...: deeper than this is a journal that loops, not a lineage."""


def find_loop(config: Config, name: str) -> LoopSpec | None:
    """`name`'s spec: from loops.toml, else as a fork from the journal; None: neither."""
    try:
        return config.loop(name)
    except KeyError:
        pass
    state_dir = config.supervisor.state_dir
    if not (state_dir / JOURNAL_NAME).exists():
        return None
    from supervisor.fork import fork_spec  # forks are rare: off the commands' path
    from supervisor.journal.reader import JournalReader

    try:
        with JournalReader(state_dir) as reader:
            lineage: list[LoopForked] = []
            current = name
            while len(lineage) < FORK_DEPTH_MAX:
                event = reader.latest_fork(current)
                if event is None:
                    break
                lineage.append(event)
                try:
                    spec = config.loop(event.parent)
                except KeyError:
                    current = event.parent
                    continue
                for forked in reversed(lineage):
                    if spec.worktree is None:
                        return None
                    spec = fork_spec(spec, forked)
                return spec
    except JournalError:
        return None
    return None
