"""`$name` placeholders (string.Template syntax) checked before a run, not at iteration 7.

Prompts and command argv both use string.Template: `$name` or `${name}`, `$$` for a
literal dollar sign. Anything else after a `$` would make `substitute` raise later.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Collection

MAX_PROBLEMS = 20
"""Problems listed per template; the rest are counted in one last line."""


def template_problems(text: str, allowed: frozenset[str]) -> list[tuple[int, str]]:
    """(offset, message) for each unknown name or stray `$` in a template: each kind
    once, at its first place, at most MAX_PROBLEMS (one mistake repeated 300,000
    times is one problem, and a flood of distinct ones ends in a count)."""
    return list(_template_problems(text, allowed))


@functools.lru_cache(maxsize=4)  # one prompt shared by many loops is scanned once
def _template_problems(text: str, allowed: frozenset[str]) -> tuple[tuple[int, str], ...]:
    problems: dict[str, int] = {}
    more, first_more = 0, 0
    for match in string.Template.pattern.finditer(text):
        name = match.group("named") or match.group("braced")
        if name is not None and name not in allowed:
            message = f"unknown placeholder ${name}"
        elif name is None and match.group("invalid") is not None:
            message = "a $ must start a placeholder name: write $$ for a literal $"
        else:
            continue
        if message in problems:
            continue
        if len(problems) < MAX_PROBLEMS:
            problems[message] = match.start()
        else:
            more, first_more = more + 1, first_more or match.start()
    found = [(offset, _explained(message, allowed)) for message, offset in problems.items()]
    if more:
        found.append((first_more, f"{more} more placeholder problem(s) not listed"))
    return tuple(found)


def _explained(message: str, allowed: Collection[str]) -> str:
    if not message.startswith("unknown placeholder $"):
        return message
    name = message.removeprefix("unknown placeholder $")
    import difflib  # a misspelt name only, not every load (start-up, issue 12)

    close = difflib.get_close_matches(name, sorted(allowed), n=1, cutoff=0.6)
    hint = f" (did you mean ${close[0]}?)" if close else ""
    known = ", ".join("$" + n for n in sorted(allowed))
    return f"{message}{hint}; known: {known}"


def placeholder_names(text: str) -> set[str]:
    """The names a template refers to."""
    names = set()
    for match in string.Template.pattern.finditer(text):
        name = match.group("named") or match.group("braced")
        if name is not None:
            names.add(name)
    return names


def line_col(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of `offset` in `text`."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1
