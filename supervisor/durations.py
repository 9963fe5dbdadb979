"""Human durations ("90s", "5m", "1h30m", "500ms") to seconds and back.

loops.toml writes time as short strings because `wall = 1800` makes a reader do
arithmetic; plain numbers still mean seconds so that scripts can emit them.
Durations are capped at MAX_DURATION: an infinite or 400-digit one would pass a
`> 0` check and then break every deadline computed from it.
"""

from __future__ import annotations

import math
import re

_UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)", re.IGNORECASE)
# One way to match any text (blanks only after a unit), so a failing match cannot
# try every split of a long run of spaces.
_WHOLE = re.compile(r"\s*(?:(?:\d+(?:\.\d+)?|\.\d+)\s*(?:ms|s|m|h|d)\s*)+", re.IGNORECASE)

DURATION_HINT = 'a duration such as "90s", "5m", "1h30m", "500ms" or a number of seconds'
MAX_DURATION = 10 * 365 * 86400.0
"""Ten years: longer than any budget, timeout or schedule interval means."""


class DurationRangeError(ValueError):
    """A well-formed duration longer than MAX_DURATION."""

    def __init__(self, shown: str) -> None:
        super().__init__(f"{shown} is longer than the limit of 10 years")


def parse_duration(value: object) -> float:
    """Seconds in `value`: an int/float (seconds) or a string of number+unit parts.

    Units: ms, s, m, h, d; parts add up ("1h30m"). A bare numeric string is seconds.
    Raises ValueError naming the accepted forms; booleans are rejected (TOML `true`
    is not a duration, even though Python treats it as 1); DurationRangeError (a
    ValueError) beyond MAX_DURATION.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HINT}, got boolean {str(value).lower()}")
    if isinstance(value, int | float):
        if isinstance(value, int) and abs(value) > MAX_DURATION:
            raise DurationRangeError(f"a duration of {len(str(abs(value)))} digits")
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError(f"expected a finite duration, got {value}")
        return _capped(seconds, f"{value:g} seconds")
    if not isinstance(value, str):
        raise ValueError(f"expected {DURATION_HINT}, got {type(value).__name__}")
    shown = f'"{value}"' if len(value) <= 40 else f'"{value[:37]}..."'
    try:
        seconds = float(value)
    except ValueError:
        return _capped(_parse_units(value, shown), shown)
    if math.isnan(seconds):
        raise ValueError(f"invalid duration {shown}: expected {DURATION_HINT}")
    return _capped(seconds, shown)  # "inf" and 400 digits are too long, not malformed


def _capped(seconds: float, shown: str) -> float:
    if seconds > MAX_DURATION:
        raise DurationRangeError(shown)
    return seconds


def _parse_units(value: str, shown: str) -> float:
    if not _WHOLE.fullmatch(value):
        raise ValueError(f"invalid duration {shown}: expected {DURATION_HINT}")
    return sum(float(num) * _UNITS[unit.lower()] for num, unit in _PART.findall(value))


def format_duration(seconds: float) -> str:
    """The shortest readable form: 1500ms→"1.5s", 5400→"1h30m", 90→"1m30s"."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:g}s"
    total = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            count, total = divmod(total, size)
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
