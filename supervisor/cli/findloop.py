"""A loop by its name, for the commands that work on one loop's worktree beside or
after a run (`diff`, `clean`).

A loop of loops.toml is found there. A loop a run made (a fork, `loopvisor fork`, or
an added loop, `loopvisor ctl add`) is not in loops.toml: it is rebuilt as `--resume`
rebuilds it (`newloops`), from the spec of the loop it was made from (itself possibly
made by a run) and the newest record of its name in the journal, so its worktree,
branch and base are the ones it was made with.
"""

from __future__ import annotations

from supervisor.journal.schema import JOURNAL_NAME, JournalError
from supervisor.spec import Config, LoopSpec

LINEAGE_MAX = 50
"""A fork of an added loop of ...: deeper than this is a journal that loops, not a
lineage."""


def find_loop(config: Config, name: str) -> LoopSpec | None:
    """`name`'s spec: from loops.toml, else as a loop a run made, from the journal;
    None: neither."""
    try:
        return config.loop(name)
    except KeyError:
        pass
    state_dir = config.supervisor.state_dir
    if not (state_dir / JOURNAL_NAME).exists():
        return None
    from supervisor.journal.reader import JournalReader  # made loops are rare: off the path
    from supervisor.newloops import NewLoop, new_loop_spec, origin

    try:
        with JournalReader(state_dir) as reader:
            lineage: list[NewLoop] = []
            current = name
            while len(lineage) < LINEAGE_MAX:
                record = reader.latest_new_loop(current)
                if record is None:
                    break
                lineage.append(record)
                try:
                    spec = config.loop(origin(record))
                except KeyError:
                    current = origin(record)
                    continue
                for made in reversed(lineage):
                    rebuilt = new_loop_spec(spec, made)
                    if rebuilt is None:
                        return None
                    spec = rebuilt
                return spec
    except JournalError:
        return None
    return None
