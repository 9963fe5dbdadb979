"""The loops a run makes beyond loops.toml: forks (`fork.py`) and added loops
(`added.py`). Each is journalled as a record (`LoopForked`, `LoopAdded`) naming the
loop it was made from; its spec is that loop's, changed as the record says. `--resume`
rebuilds them so (`runtime_setup`), and so do the offline commands that find a loop
by its name (`cli.findloop`: `diff`, `clean`), so a fork of an added loop, or a loop
added like a fork, is found as well as one made from a loops.toml loop.
"""

from __future__ import annotations

from supervisor.events import LoopAdded, LoopForked
from supervisor.spec import LoopSpec

NewLoop = LoopForked | LoopAdded
"""The record of a loop a run made."""


def origin(record: NewLoop) -> str:
    """The loop `record`'s loop was made from: a fork's parent, an added loop's like."""
    return record.parent if isinstance(record, LoopForked) else record.like


def new_loop_spec(made_from: LoopSpec, record: NewLoop) -> LoopSpec | None:
    """The spec of `record`'s loop, made from its origin's spec; None: a fork of a loop
    without a worktree (a journal no run could have written)."""
    if isinstance(record, LoopForked):
        if made_from.worktree is None:
            return None
        from supervisor.fork import fork_spec  # forks are rare: off the commands' path

        return fork_spec(made_from, record)
    from supervisor.added import added_spec  # added loops are rare: off the commands' path

    return added_spec(made_from, record)
