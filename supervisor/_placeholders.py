"""`$name` placeholders (string.Template syntax) checked before a run, not at iteration 7.

Prompts and command argv both use string.Template: `$name` or `${name}`, `$$` for a
literal dollar sign. Anything else after a `$` would make `substitute` raise later.
"""

from __future__ import annotations

import difflib
import string
from collections.abc import Collection

from .spec import PLACEHOLDERS

COMMAND_PLACEHOLDERS = frozenset({"prompt", "loop", "iteration", "workspace", "prompt_file"})
"""What a command agent's argv may contain."""


def template_problems(text: str, allowed: Collection[str]) -> list[tuple[int, str]]:
    """(offset, message) for each unknown name or stray `$` in a template."""
    problems: list[tuple[int, str]] = []
    for match in string.Template.pattern.finditer(text):
        name = match.group("named") or match.group("braced")
        if name is not None:
            if name not in allowed:
                close = difflib.get_close_matches(name, sorted(allowed), n=1, cutoff=0.6)
                hint = f" (did you mean ${close[0]}?)" if close else ""
                known = ", ".join("$" + n for n in sorted(allowed))
                problems.append(
                    (match.start(), f"unknown placeholder ${name}{hint}; known: {known}")
                )
        elif match.group("invalid") is not None:
            problems.append(
                (match.start(), "a $ must start a placeholder name: write $$ for a literal $")
            )
    return problems


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


def check_prompt_template(text: str) -> list[str]:
    """Problems of a prompt template, each prefixed with its line and column in `text`;
    an empty list means it renders (allowed names: spec.PLACEHOLDERS)."""
    messages = []
    for offset, message in template_problems(text, PLACEHOLDERS):
        line, col = line_col(text, offset)
        messages.append(f"line {line}, column {col}: {message}")
    return messages
