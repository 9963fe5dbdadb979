"""Regexes compiled when first used, not when their module is imported.

`run` imports modules whose regexes most runs never use: a failing check's
fingerprint (20) and the test-count summaries (10) were compiled at every start,
~6 ms of CPU (issue 12). `lazy(pattern, flags)` is a pattern's accessor, compiled on
its first call and kept: `_PAIR = lazy(r"(\\d+) passed")`, then `_PAIR().findall(text)`.
Patterns a run uses anyway (config parsing, the output path) stay compiled at import.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable


def lazy(pattern: str, flags: int = 0) -> Callable[[], re.Pattern[str]]:
    return functools.cache(functools.partial(re.compile, pattern, flags))
