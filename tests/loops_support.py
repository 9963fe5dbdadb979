"""Loop configurations (loops.toml text) that several test files share, so that each
test says only what its configuration adds.

- `fixer_config`: the `fixer` sim agent drafting app.py, then fixing it, in the
  worktree loop `fix` of a real git repository (`gitrepo.make_repo(tmp/"repo")`):
  the configuration of the fork, diff and console-fork tests.
- `failing_loop`, `NO_STUCK`, `PER_ITERATION`: the budget tests' loop `a`, whose
  check always fails, so that only a budget ends or pauses it.
"""

from __future__ import annotations

from helpers import loop, sim_agent, supervisor_table

PER_ITERATION = 29
"""Tokens one iteration of the budget tests' sim agent costs (its prompt and 20 reply
tokens)."""
NO_STUCK = {"same_failure": 0, "same_output": 0, "oscillation": False, "cost_spike": False}
"""Every stuck detector off: the budget, not a detector, ends a failing loop."""


def failing_loop(**keys: object) -> str:
    """Loop `a` on agent `s`, 4 iterations at most, its one check always failing."""
    return loop(
        "a", "s", max_iterations=4, checks=[{"name": "f", "run": "false"}], stuck=NO_STUCK, **keys
    )


def fixer_config(
    *,
    converge_after: int = 3,
    news: bool = True,
    plain: bool = True,
    fix: dict[str, object] | None = None,
    more: tuple[str, ...] = (),
) -> str:
    """`fix` writes a draft of app.py until iteration `converge_after`, which writes the
    fix (and NEWS.md with `news`): the iterations in between commit nothing new. With
    `plain`, a loop `plain` without a worktree (workspace `ws`, one iteration). `fix`
    adds keys to the `fix` loop; `more` adds tables at the end."""
    files = {"app.py": "fixed\n", "NEWS.md": "fixed the app\n"} if news else {"app.py": "fixed\n"}
    tables = [
        supervisor_table(2),
        sim_agent(
            "fixer",
            rate=400,
            reply_tokens=10,
            converge_after=converge_after,
            draft_files={"app.py": "draft\n"},
            files=files,
        ),
        loop(
            "fix",
            "fixer",
            workspace={"repo": "repo", "worktree": True},
            checks=[{"run": "grep -q fixed app.py"}],
            stuck={"same_failure": 0, "same_output": 0, "oscillation": False},
            **(fix or {}),
        ),
    ]
    if plain:
        tables.append(loop("plain", "fixer", workspace="ws", done_marker="NEVER", max_iterations=1))
    return "\n".join([*tables, *more])
