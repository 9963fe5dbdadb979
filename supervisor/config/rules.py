"""The rules a loop's editable settings obey, in one place: its prompt template,
`max_iterations` and budget limits.

Three front doors lead here: loops.toml (the config reads a prompt through
`prompt_problems`, and reports each problem at its FILE:LINE:COL), an edit in the
console (the edit dialog checks `edit_problems` on every keystroke, so errors show
before anything is applied) and the `edit` control op (`ctl edit`, the console's
apply, any socket client), which refuses what `edit_problems` finds. Turning text
into numbers (a dialog's fields, `ctl edit --usd 5`) is each front door's own
business; what a valid value is, is decided here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from supervisor.config._placeholders import line_col, template_problems
from supervisor.config._schema import name_problem
from supervisor.sizes import PROMPT_TEMPLATE_MAX_BYTES, size_of, too_large
from supervisor.spec import PLACEHOLDERS, Limits

LIMIT_NAMES = ("tokens", "usd", "wall", "cpu")
LOOP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong with one setting; `line`/`column` place a template problem in the
    prompt (1-based)."""

    setting: str
    """"prompt", "max_iterations", "budget.tokens", ..."""
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}: " if self.line is not None else ""
        return f"{self.setting}: {where}{self.message}"


def prompt_problems(prompt: str, *, empty_ok: bool = False) -> list[Problem]:
    """A prompt template's problems: too large (then nothing else is scanned), empty
    (unless `empty_ok`: the caller said so already), placeholders that do not exist
    (`spec.PLACEHOLDERS`) or a stray `$`."""
    too_big = too_large("the prompt", size_of(prompt), PROMPT_TEMPLATE_MAX_BYTES)
    if too_big is not None:
        return [Problem("prompt", too_big)]
    problems = []
    if not empty_ok and not prompt.strip():
        problems.append(Problem("prompt", "must not be empty"))
    for offset, message in template_problems(prompt, PLACEHOLDERS):
        line, column = line_col(prompt, offset)
        problems.append(Problem("prompt", message, line, column))
    return problems


def edit_problems(
    *,
    prompt: str | None = None,
    max_iterations: int | None = None,
    limits: Limits | None = None,
) -> list[Problem]:
    """Everything wrong with an edit of a loop (None: that setting is not changed)."""
    problems = prompt_problems(prompt) if prompt is not None else []
    if max_iterations is not None and max_iterations <= 0:
        problems.append(Problem("max_iterations", "must be a positive integer"))
    if limits is not None:
        for name in LIMIT_NAMES:
            value = getattr(limits, name)
            if value is not None and value <= 0:
                problems.append(Problem(f"budget.{name}", "must be positive"))
    return problems


def loop_name_problem(name: str) -> str | None:
    """Why `name` cannot name a loop (None: it can), as loops.toml says it (the `add`
    op names a new loop by the same rule; that it is free is the caller's to check)."""
    problem = name_problem(name)
    if problem is not None:
        return f'"{name}" {problem}'
    if not LOOP_NAME.fullmatch(name):
        return (
            f'"{name}" is not a valid loop name: use letters, digits, _ . - '
            "and start with a letter or digit"
        )
    if name == "global":
        return '"global" is reserved for the run-wide budget; pick another loop name'
    return None
