"""Typed reading of parsed TOML tables that collects every problem instead of raising.

A `Table` pairs each value with the key path it came from, so that an error names
the file, line and column where the user wrote it, even when a loop inherited the
value from a template. Getters record an issue and return the caller's default,
which lets validation continue and report everything in one pass.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path
from types import MappingProxyType
from typing import Literal, TypeVar, overload

from supervisor._limits import MAX_MAGNITUDE, MAX_NAME_LENGTH, failure, read_text
from supervisor.childenv import ENV_NAME, SUPERVISOR_PREFIX
from supervisor.config._tomlpos import KeyPath, Positions, key_positions
from supervisor.durations import DURATION_HINT, DurationRangeError, parse_duration
from supervisor.sizes import PROMPT_TEMPLATE_MAX_BYTES
from supervisor.textsafe import for_terminal_line

T = TypeVar("T")
_NUL = "must not contain a null character (\\0): no path, argument or variable can hold one"
Entry = tuple[object, KeyPath]
"""A value and the path of the key that wrote it."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config file, at the position of the offending key."""

    file: Path
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        """One line for a terminal: names and values from the file may hold controls."""
        where = for_terminal_line(str(self.file))
        return f"{where}:{self.line}:{self.col}: {for_terminal_line(self.message)}"


class ConfigError(Exception):
    """A config that cannot run; `issues` lists every problem found, in file order."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues: list[ConfigIssue] = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class Issues:
    """Collects errors and warnings, deduplicated (a template shared by loops is read
    once per loop) and sorted by position."""

    def __init__(self, file: Path, text: str) -> None:
        self.file = file
        self._text = text
        self._positions: Positions | None = None
        self._errors: dict[ConfigIssue, None] = {}
        self._warnings: dict[ConfigIssue, None] = {}
        self.texts: dict[Path, str] = {}
        """Files read during this parse: a prompt_file that 3,000 loops share is read,
        scanned and held once, not 3,000 times."""

    @property
    def positions(self) -> Positions:
        """Where each key of the file is written: scanned at the first issue, not at
        every load (a 1,000-loop loops.toml took ~0.15 s to scan, and a valid one
        never needs it: start-up and resume, issue 12)."""
        if self._positions is None:
            self._positions = key_positions(self._text)
        return self._positions

    def error(self, at: KeyPath, message: str) -> None:
        line, col = self.positions.locate(at)
        self._errors[ConfigIssue(self.file, line, col, message)] = None

    def error_in(self, file: Path, line: int, col: int, message: str) -> None:
        self._errors[ConfigIssue(file, line, col, message)] = None

    def warn(self, at: KeyPath, message: str) -> None:
        line, col = self.positions.locate(at)
        self._warnings[ConfigIssue(self.file, line, col, f"warning: {message}")] = None

    @property
    def errors(self) -> list[ConfigIssue]:
        return sorted(self._errors, key=self._order)

    @property
    def warnings(self) -> list[ConfigIssue]:
        return sorted(self._warnings, key=self._order)

    def _order(self, issue: ConfigIssue) -> tuple[bool, str, int, int]:
        return (issue.file != self.file, str(issue.file), issue.line, issue.col)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean "x"?)' for the closest choice, or ''."""
    import difflib  # a misspelt word only, not every load (start-up, issue 12)

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def describe(value: object) -> str:
    """How a TOML value reads in an error message: `string "ten"`, `boolean true`."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f'string "{value}"' if len(value) <= 40 else f'string "{value[:37]}..."'
    if isinstance(value, int):
        return f"integer {_number(value)}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, date | time):
        return f"datetime {value.isoformat()}"
    return type(value).__name__


def _number(value: float) -> str:
    """A number for a message; a 100-digit one as its digit count, not its digits."""
    text = str(value)
    return text if len(text) <= 24 else f"of {len(text.lstrip('-'))} digits"


def name_problem(name: str) -> str | None:
    """Why `name` (of a loop, agent or template) cannot be used, or None.

    Names reach terminals, the journal and the TUI: no control or bidi characters,
    and short enough to be a path component or a git branch.
    """
    if for_terminal_line(name) != name:
        return "must not contain control characters"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long: the limit is {MAX_NAME_LENGTH}"
    return None


def path_problem(path: Path) -> tuple[Path, str | None]:
    """`path` resolved, and why it is not an existing directory (None if it is).

    A NUL in the name or a name too long is an answer here, not an exception.
    """
    try:
        resolved = path.resolve()
        return resolved, None if resolved.is_dir() else "does not exist"
    except (OSError, ValueError) as exc:
        return path, failure(exc)


class Nested(dict[str, Entry]):
    """A sub-table merged key by key from several layers (template `budget`, `stuck`)."""


def entries(raw: Mapping[str, object], at: KeyPath) -> dict[str, Entry]:
    return {key: (value, (*at, key)) for key, value in raw.items()}


class Table:
    """Typed, issue-recording access to one table. `label` prefixes key names in
    messages ("budget.", "checks[1].") so that a message stands on its own."""

    def __init__(self, issues: Issues, items: Mapping[str, Entry], at: KeyPath, label: str = ""):
        self.issues = issues
        self.items = items
        self.path = at
        self.label = label

    @classmethod
    def of(cls, issues: Issues, raw: Mapping[str, object], at: KeyPath, label: str = "") -> Table:
        return cls(issues, entries(raw, at), at, label)

    def __contains__(self, key: str) -> bool:
        return key in self.items

    def keys(self) -> list[str]:
        return list(self.items)

    def at(self, key: str) -> KeyPath:
        return self.items[key][1] if key in self.items else self.path

    def raw(self, key: str) -> object:
        return self.items[key][0] if key in self.items else None

    def error(self, key: str, message: str) -> None:
        self.issues.error(self.at(key), f"{self.label}{key}: {message}")

    def type_error(self, key: str, expected: str) -> None:
        self.error(key, f"expected {expected}, got {describe(self.raw(key))}")

    def check_keys(self, allowed: Collection[str], what: str) -> None:
        """Report keys that `what` does not know, with the closest valid key (`what` is
        named only when the label does not already say where the key is)."""
        for key in self.items:
            if key not in allowed:
                hint = did_you_mean(key, allowed)
                if not hint:
                    hint = " (valid keys: " + ", ".join(sorted(allowed)) + ")"
                where = "" if self.label else f" in {what}"
                self.issues.error(self.at(key), f"unknown key {self.label}{key}{where}{hint}")

    def require(self, key: str, what: str) -> bool:
        if key in self.items:
            return True
        self.issues.error(self.path, f"{what}: missing required key {self.label}{key}")
        return False

    def integer(
        self, key: str, default: T, *, positive: bool = False, minimum: int | None = None
    ) -> int | T:
        value = self.raw(key)
        if key not in self.items:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.type_error(key, "an integer")
            return default
        return value if self._in_range(key, value, positive, minimum, None) else default

    def number(
        self,
        key: str,
        default: T,
        *,
        positive: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float | T:
        value = self.raw(key)
        if key not in self.items:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            self.type_error(key, "a number")
            return default
        if isinstance(value, float) and math.isinf(value):
            self.error(key, f"must be a finite number, got {describe(value)}")
            return default
        ok = self._in_range(key, value, positive, minimum, maximum)
        return float(value) if ok else default

    def _in_range(
        self, key: str, value: float, positive: bool, minimum: float | None, maximum: float | None
    ) -> bool:
        shown = _number(value)
        if shown.startswith("of "):
            shown = f"a number {shown}"  # "a number of 30 digits"
        if positive and value <= 0:
            self.error(key, f"must be greater than 0, got {shown}")
        elif minimum is not None and value < minimum:
            self.error(key, f"must be at least {minimum}, got {shown}")
        elif maximum is not None and value > maximum:
            self.error(key, f"must be at most {maximum}, got {shown}")
        elif abs(value) > MAX_MAGNITUDE:
            self.error(key, f"must be at most {MAX_MAGNITUDE:.0e} in size, got {shown}")
        else:
            return True
        return False

    def string(self, key: str, default: T, *, nonempty: bool = False) -> str | T:
        value = self.raw(key)
        if key not in self.items:
            return default
        if not isinstance(value, str):
            self.type_error(key, "a string")
            return default
        if "\0" in value:
            self.error(key, _NUL)
            return default
        if nonempty and not value.strip():
            self.error(key, "must not be empty")
            return default
        return value

    def boolean(self, key: str, default: T) -> bool | T:
        value = self.raw(key)
        if key not in self.items:
            return default
        if not isinstance(value, bool):
            self.type_error(key, "a boolean (true or false)")
            return default
        return value

    @overload
    def duration(self, key: str, default: float, *, off: Literal[False] = False) -> float: ...
    @overload
    def duration(self, key: str, default: float | None, *, off: bool = False) -> float | None: ...
    def duration(self, key: str, default: float | None, *, off: bool = False) -> float | None:
        """Seconds > 0; with `off`, `false` turns the feature off (None)."""
        value = self.raw(key)
        if key not in self.items:
            return default
        if off and value is False:
            return None
        try:
            seconds = parse_duration(value)
        except DurationRangeError as exc:
            self.error(key, str(exc))
            return default
        except ValueError:
            hint = DURATION_HINT + (", or false" if off else "")
            self.type_error(key, hint)
            return default
        if seconds <= 0:
            self.error(key, f"must be a duration greater than 0, got {describe(value)}")
            return default
        return seconds

    def choice(self, key: str, choices: Collection[str], default: T) -> str | T:
        value = self.raw(key)
        if key not in self.items:
            return default
        if value not in choices or not isinstance(value, str):
            listed = ", ".join(f'"{c}"' for c in choices)
            hint = did_you_mean(value, choices) if isinstance(value, str) else ""
            self.error(key, f"expected one of {listed}, got {describe(value)}{hint}")
            return default
        return value

    def strings(self, key: str, default: T, *, nonempty: bool = False) -> tuple[str, ...] | T:
        value = self.raw(key)
        if key not in self.items:
            return default
        if not isinstance(value, list):
            self.type_error(key, "an array of strings")
            return default
        wrong = [(i, v) for i, v in enumerate(value) if not isinstance(v, str)]
        for index, item in wrong:
            self.issues.error(
                (*self.at(key), index),
                f"{self.label}{key}[{index}]: expected a string, got {describe(item)}",
            )
        if wrong:
            return default
        if any("\0" in v for v in value):
            self.error(key, _NUL)
            return default
        if nonempty and not value:
            self.error(key, "must not be empty")
            return default
        return tuple(value)

    def string_map(self, key: str) -> Mapping[str, str]:
        value = self.raw(key)
        if key not in self.items:
            return MappingProxyType({})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            self.type_error(key, "a table of strings")
            return MappingProxyType({})
        if any("\0" in k or "\0" in v for k, v in value.items()):
            self.error(key, _NUL)
            return MappingProxyType({})
        return MappingProxyType(dict(value))

    def table(self, key: str, label: str | None = None) -> Table | None:
        """The sub-table at `key` (a plain or merged table), or None if absent/not a table."""
        value = self.raw(key)
        if key not in self.items:
            return None
        prefix = f"{self.label}{key}." if label is None else label
        if isinstance(value, Nested):
            return Table(self.issues, value, self.at(key), prefix)
        if not isinstance(value, dict):
            self.type_error(key, "a table")
            return None
        return Table.of(self.issues, value, self.at(key), prefix)


def read_file(t: Table, key: str, config_dir: Path) -> tuple[Path, str] | None:
    """The path (config folder / value) and text of the file named at `key`, or None
    after recording why it cannot be read. At most `PROMPT_TEMPLATE_MAX_BYTES` are
    read: a prompt named `/dev/zero` is an error, not a hang."""
    rel = t.string(key, None, nonempty=True)
    if rel is None:
        return None
    path = config_dir / rel
    if path in t.issues.texts:
        return path, t.issues.texts[path]
    try:
        text = t.issues.texts[path] = read_text(path, limit=PROMPT_TEMPLATE_MAX_BYTES)
        return path, text
    except (OSError, ValueError) as exc:
        t.error(key, f'cannot read "{rel}": {failure(exc)}')
        return None


def read_child_env(t: Table) -> tuple[Mapping[str, str], tuple[str, ...]]:
    """`env = {NAME = "value"}` and `pass_env = ["NAME", "PREFIX*"]` of an agent or check:
    names a shell can read and no LOOPVISOR_* (the supervisor's); `string_map` already
    refuses a NUL in a value."""
    env = t.string_map("env")
    for name in env:
        at = (*t.at("env"), name)
        if not ENV_NAME.fullmatch(name):
            t.issues.error(at, f'{t.label}env: "{name}" is not a variable name (A-Z, 0-9, _)')
        elif name.startswith(SUPERVISOR_PREFIX):
            t.issues.error(at, f"{t.label}env: {name}: {SUPERVISOR_PREFIX}* is set by loopvisor")
    pass_env = t.strings("pass_env", ())
    for index, name in enumerate(pass_env):
        at = (*t.at("pass_env"), index)
        if not ENV_NAME.fullmatch(name.removesuffix("*")):
            t.issues.error(
                at, f'{t.label}pass_env[{index}]: "{name}" is not a variable name or PREFIX*'
            )
        elif name.startswith(SUPERVISOR_PREFIX):
            t.issues.error(
                at, f"{t.label}pass_env[{index}]: {SUPERVISOR_PREFIX}* is set by loopvisor"
            )
    return env, pass_env
