"""One redaction step for every text that enters the core from an agent or a check.

A model, a test it wrote or a tool can print a secret (an API key found in a file,
a token echoed back). Whatever enters the core is redacted before it is kept:
streamed agent output, an agent's final output (`$last_output`), check output
(`$check_output`), tool results, conversations kept for the next request, the
prompt as sent; and `EventBus.publish` redacts every event once more before the
journal, the printer, the TUI or a socket client sees it.

What is secret:
- the value of every variable of the supervisor's environment whose name looks
  secret (`SECRET_NAME`: KEY, TOKEN, SECRET, PASSWORD, PASSWD, CREDENTIAL, any
  case), when it is at least `MIN_SECRET_LEN` characters long (so that `DEBUG_KEY=1`
  does not redact every "1"); replaced by `[REDACTED:NAME]`;
- the same for the `env` tables loops.toml gives agents and checks;
- every match of a `[redact] patterns` regex from loops.toml: `[REDACTED:pattern]`;
- every `[notify] webhook` URL (a Slack or ntfy URL is its own credential):
  `[REDACTED:notify.webhook]`, in the journalled loops.toml and loop specs too.
All of them are one compiled alternation (longest literal first), one `sub` per text.

Streaming: a secret may arrive split across two deltas ("sk-ant-ap", "i03-..."), so
`StreamRedactor` holds back the tail that could still grow into one (the trailing
word, and for a secret that contains spaces any suffix that begins it) until the
next delta or the end of the turn.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from supervisor.spec import Config

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
MIN_SECRET_LEN = 8
PATTERN_LABEL = "pattern"
WEBHOOK_LABEL = "notify.webhook"
MAX_HOLD = 256
"""Most characters a stream holds back waiting for the rest of a possible secret."""
_WORD_HEAD = re.compile(r"\S*")

T = TypeVar("T")


def secret_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """value -> variable name for the secret-looking variables of `environ`."""
    environ = os.environ if environ is None else environ
    found: dict[str, str] = {}
    for name, value in sorted(environ.items()):
        if SECRET_NAME.search(name) and len(value.strip()) >= MIN_SECRET_LEN:
            found.setdefault(value, name)
    return found


class Redactor:
    """Replaces secrets in text and in JSON-like values. Stateless and cheap to call:
    with nothing to redact every method returns its argument untouched."""

    def __init__(self, secrets: Mapping[str, str], patterns: Iterable[str] = ()) -> None:
        self._names = dict(secrets)
        literals = sorted(self._names, key=len, reverse=True)
        alternatives = [re.escape(v) for v in literals] + [f"(?:{p})" for p in patterns]
        self._regex = re.compile("|".join(alternatives)) if alternatives else None
        self.max_literal = max((len(v) for v in literals), default=0)
        self._spaced = [v for v in literals if any(c.isspace() for c in v)]

    @classmethod
    def from_environment(
        cls, patterns: Iterable[str] = (), environ: Mapping[str, str] | None = None
    ) -> Redactor:
        """Secrets from the supervisor's environment plus the config's patterns."""
        return cls(secret_values(environ), patterns)

    @classmethod
    def for_config(cls, config: Config) -> Redactor:
        """The supervisor's environment, the secret-looking `env` entries loops.toml
        gives agents and checks, its webhook URLs and its `[redact] patterns`."""
        tables = [getattr(agent, "env", {}) for agent in config.agents.values()]
        tables += [check.env for loop in config.loops for check in loop.checks]
        secrets: dict[str, str] = {}
        for table in [*tables, os.environ]:
            secrets.update(secret_values(table))
        for notify in config.notify_specs():
            if notify.webhook:
                secrets[notify.webhook] = WEBHOOK_LABEL
        return cls(secrets, config.redact_patterns)

    @property
    def active(self) -> bool:
        return self._regex is not None

    def text(self, text: str) -> str:
        if self._regex is None or not text:
            return text
        return self._regex.sub(self._label, text)

    def _label(self, match: re.Match[str]) -> str:
        name = self._names.get(match.group(0), PATTERN_LABEL)
        return f"[REDACTED:{name}]"

    def value(self, value: T) -> T:
        """Strings inside dicts, lists and tuples redacted (a tool input, a conversation)."""
        if self._regex is None:
            return value
        return _walk(value, self.text)  # type: ignore[no-any-return]

    def fields(self, record: T) -> T:
        """A frozen dataclass (an event, a check outcome) with its text fields redacted;
        the same object when nothing changed."""
        if self._regex is None or not dataclasses.is_dataclass(record):
            return record
        return _walk(record, self.text)  # type: ignore[no-any-return]

    def hold_back(self, text: str) -> int:
        """Where the part of (already redacted) `text` that could still be the start
        of a secret begins: everything before it is safe to release."""
        if self._regex is None:
            return len(text)
        # The trailing word, at most `cap` long: matched from the end of the reversed
        # tail, so the cost is O(cap) whatever the text (`\S*\Z` searched forward
        # rescans a long word from each of its positions: quadratic in its length).
        cap = max(MAX_HOLD, self.max_literal)
        hold = _WORD_HEAD.match(text[: -cap - 1 : -1]).end()  # type: ignore[union-attr]
        for secret in self._spaced:
            for k in range(min(len(secret) - 1, len(text)), hold, -1):
                if text.endswith(secret[:k]):
                    hold = k
                    break
        return len(text) - hold


def _walk(value: Any, fix: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fix(value)
    if isinstance(value, Mapping):  # a dict, or a spec's read-only env table
        return {k: _walk(v, fix) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, fix) for v in value]
    if isinstance(value, tuple):
        return tuple(_walk(v, fix) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {}
        for f in dataclasses.fields(value):
            old = getattr(value, f.name)
            if isinstance(old, str | Mapping | list | tuple) or dataclasses.is_dataclass(old):
                new = _walk(old, fix)
                if new != old:
                    changes[f.name] = new
        return dataclasses.replace(value, **changes) if changes else value
    return value


class StreamRedactor:
    """Redacts streamed text per stream before it reaches `emit(text, stream)`, holding
    back a tail that a secret split across deltas could still complete."""

    def __init__(self, redactor: Redactor, emit: Callable[[str, str], None]) -> None:
        self._redactor = redactor
        self._emit = emit
        self._held: dict[str, str] = {}

    def add(self, text: str, stream: str) -> None:
        if not self._redactor.active:
            self._emit(text, stream)
            return
        clean = self._redactor.text(self._held.pop(stream, "") + text)
        cut = self._redactor.hold_back(clean)
        if cut:
            self._emit(clean[:cut], stream)
        if cut < len(clean):
            self._held[stream] = clean[cut:]

    def flush(self) -> None:
        """Release what is held (the turn ended, or other events must follow the text)."""
        held, self._held = self._held, {}
        for stream, text in held.items():
            self._emit(text, stream)
