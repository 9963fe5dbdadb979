"""Small pieces the Supervisor's tests share: workspaces, a check that every state change
has a reason, and an endless sim loop with the iterations it started.
"""

from __future__ import annotations

from pathlib import Path

from helpers import Recorded, loop, sim_agent

from supervisor import events as ev


def workspaces(tmp_path: Path, *names: str) -> None:
    """A folder in tmp_path for each loop named."""
    for name in names:
        (tmp_path / name).mkdir()


def assert_reasons(rec: Recorded) -> None:
    """Every state change says why, and every loop's last state is its result's."""
    for change in rec.of(ev.LoopStateChanged):
        assert change.reason.strip(), change
    assert rec.summary is not None
    for result in rec.summary.loops:
        assert rec.states(result.name)[-1] == result.state, (result.name, rec.states(result.name))


ENDLESS = sim_agent("endless", rate=1000, reply_tokens=20, converge_after=10_000)
"""A sim agent that never says it is done (fast: 1000 tokens/s)."""


def endless_loop(name: str = "L", **keys: object) -> str:
    """A loop of ENDLESS that never ends by itself (the same-output detector off)."""
    keys.setdefault("max_iterations", 1000)
    keys.setdefault("stuck", {"same_output": 0})
    return loop(name, "endless", done_marker="NEVER", **keys)


def started(rec: Recorded, loop_name: str = "L") -> list[int]:
    """The iterations `loop_name` has started so far, in order."""
    return [s.iteration for s in rec.of(ev.IterationStarted, loop_name)]
