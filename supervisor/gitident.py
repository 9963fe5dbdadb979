"""Who a checkpoint commit is by: `commit_author = "Name <email>"` on a loop, else
`loopvisor <loopvisor@localhost>`.

A fixed identity, not the user's `user.name`: the commits are the loop's work, and a
machine without a git identity (a fresh dev box, CI) must not fail every checkpoint
with "Please tell me who you are". The same identity is the committer, given to git
through `GIT_AUTHOR_*` / `GIT_COMMITTER_*` (which win over any config file).
Kept apart from `checkpoint` so that reading loops.toml imports nothing that runs git.
"""

from __future__ import annotations

import re

DEFAULT_AUTHOR = "loopvisor <loopvisor@localhost>"
AUTHOR = re.compile(r"([^<>\n]*[^<>\s][^<>\n]*?)\s*<([^<>\s]+)>")
"""`Name <email>`: what git accepts as an identity (no `<`, `>` or newline in either)."""


def author_problem(value: str) -> str | None:
    """Why `value` is not a usable `commit_author` (None: it is)."""
    if AUTHOR.fullmatch(value.strip()) is None:
        return f'"{value}" is not "Name <email>" (for example "{DEFAULT_AUTHOR}")'
    return None


def author_env(author: str | None) -> dict[str, str]:
    """GIT_AUTHOR_* and GIT_COMMITTER_* for `author` (default: loopvisor's own)."""
    found = AUTHOR.fullmatch((author or DEFAULT_AUTHOR).strip())
    if found is None:  # validated in loops.toml; the default as a last resort
        found = AUTHOR.fullmatch(DEFAULT_AUTHOR)
        assert found is not None
    name, email = found.group(1).strip(), found.group(2)
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }
