"""Pure parser of `gemini -p ... --output-format stream-json` lines into agent events.

`GeminiJsonParser.feed(line)` turns one stdout line into `AgentEvent`s; `finish()` gives
the turn's terminal event once the process has exited. No I/O here: the recordings in
tests/data/gemini/ (gemini-cli 0.61.0 against tests/fake_gemini.py) drive it directly.

Line shapes (the CLI's `JsonStreamEventType` and its non-interactive loop, read in the
0.61.0 bundle and seen in the recordings):
- `init {session_id, model}` -> `SessionStarted` (the id `--resume` takes).
- `message {role: "user", content}` -> nothing (the prompt, echoed);
  `message {role: "assistant", content, delta: true}` -> `TextDelta` (streamed pieces).
- `tool_use {tool_name, tool_id, parameters}` -> `ToolCall`.
- `tool_result {tool_id, status: success|error, output?, error?: {type, message}}`
  -> `ToolResult`.
- `error {severity: warning|error, message}` -> a raw line (loop detected, a blocked
  or invalid response); remembered for the failure message.
- `result {status: success|error, stats, error?}`: the turn's end. `stats` is the only
  place stream-json reports usage: `{total_tokens, input_tokens, output_tokens, cached,
  input, duration_ms, tool_calls, models: {MODEL: {total_tokens, input_tokens,
  output_tokens, cached, input}}}`, summed over every request the process made
  (including the router's classifier call to a small model when `model` is "auto").

Usage as it arrives. The CLI also keeps each session in a file of its own
(`$GEMINI_CLI_HOME or HOME/.gemini/tmp/PROJECT/chats/session-TIME-ID8.jsonl`, one JSON
object a line), where every model response is a `{id, type: "gemini", tokens: {input,
output, cached, thoughts, tool, total}, model}` line written as the response lands
(before its tool calls finish; again, same id, once they have). The agent tails that
file and feeds each such line to `observe_message` (`session_message` reads it), so
a turn is charged response by response; the `result`'s stats then charge only what
the file did not show (the router's classifier call, say), capped so that the turn's
total is never more than the stats say.

Token dimensions. Gemini's `promptTokenCount` (stats `input_tokens`) includes the
cached tokens, and `totalTokenCount` adds the candidates, the thoughts and the tool-use
prompt tokens to it; stats' `output_tokens` are the candidates only. A model's share is
charged as input = input_tokens - cached, cache_read = cached, output = total_tokens -
input_tokens (candidates + thoughts + tool-use prompt): their sum is the total the API
reported, which is what it bills.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from supervisor.agents.base import (
    AgentEvent,
    AgentFailed,
    Done,
    SessionStarted,
    TextDelta,
    ToolCall,
    ToolResult,
)
from supervisor.agents.pricing import cost_usd
from supervisor.agents.stream_json_lines import decode, raw_line, text_or_none, tool_output
from supervisor.agents.usage import Tokens, positive_int
from supervisor.spec import Price

NOT_RETRYABLE = ("API key not valid", "PERMISSION_DENIED", "INVALID_ARGUMENT", "NOT_FOUND")
"""Words in a failure message that retrying cannot fix (a key, a model name)."""


def tokens_of(stats: Any) -> Tokens:
    """One model's stats (or a whole `stats`) in the ledger's dimensions."""
    if not isinstance(stats, Mapping):
        return Tokens()
    prompt = positive_int(stats.get("input_tokens"))
    cached = min(positive_int(stats.get("cached")), prompt)
    total = positive_int(stats.get("total_tokens"))
    return Tokens(input=prompt - cached, output=max(0, total - prompt), cache_read=cached)


def session_message(line: str) -> tuple[str, str | None, Tokens] | None:
    """From one line of the CLI's session file: a model response's (id, model, tokens),
    or None for anything else (user messages, metadata, `$set` updates)."""
    obj = decode(line)
    if obj is None or obj.get("type") != "gemini":
        return None
    tokens = obj.get("tokens")
    msg_id = text_or_none(obj.get("id"))
    if not isinstance(tokens, Mapping) or msg_id is None:
        return None
    prompt = positive_int(tokens.get("input"))
    cached = min(positive_int(tokens.get("cached")), prompt)
    total = positive_int(tokens.get("total"))
    return (
        msg_id,
        text_or_none(obj.get("model")),
        Tokens(input=prompt - cached, output=max(0, total - prompt), cache_read=cached),
    )


class GeminiJsonParser:
    def __init__(
        self,
        *,
        price: Callable[[str | None], Price | None] | None = None,
        model: str | None = None,
    ) -> None:
        self._price = price or (lambda _model: None)
        self.model = model
        self.session_id: str | None = None
        self.charged = Tokens()
        """What this turn has charged so far."""
        self._by_model: dict[str, Tokens] = {}
        self._by_message: dict[str, Tokens] = {}
        self.known_messages: set[str] = set()
        """Responses of earlier turns (a resumed session's file): never charged here."""
        self.completed = False
        self.failure: str | None = None
        self.last_error: str | None = None
        self._text: list[str] = []
        self._turn_text: list[str] = []

    @property
    def last_text(self) -> str:
        """The assistant's text since its last tool call (the turn's answer)."""
        return "".join(self._turn_text)

    def feed(self, line: str) -> list[AgentEvent]:
        if not line.strip():
            return []
        obj = decode(line)
        if obj is None:
            return [raw_line(line)]
        kind = obj.get("type")
        if kind == "init":
            self.session_id = text_or_none(obj.get("session_id"))
            model = text_or_none(obj.get("model"))
            if model and model != "auto":
                self.model = model
            return [SessionStarted(self.session_id)] if self.session_id else []
        if kind == "message":
            content = obj.get("content")
            if obj.get("role") != "assistant" or not isinstance(content, str) or not content:
                return []
            self._turn_text.append(content)
            return [TextDelta(content)]
        if kind == "tool_use":
            self._turn_text = []
            params = obj.get("parameters")
            return [
                ToolCall(
                    tool_id=str(obj.get("tool_id") or ""),
                    name=str(obj.get("tool_name") or "?"),
                    input=dict(params) if isinstance(params, Mapping) else {},
                )
            ]
        if kind == "tool_result":
            error = obj.get("error")
            failed = obj.get("status") == "error"
            output = obj.get("output")
            if output is None and isinstance(error, Mapping):
                output = error.get("message")
            return [
                ToolResult(
                    tool_id=str(obj.get("tool_id") or ""),
                    output=tool_output(output),
                    is_error=failed,
                )
            ]
        if kind == "error":
            message = str(obj.get("message") or "error")
            self.last_error = message
            return [raw_line(f"gemini {obj.get('severity') or 'error'}: {message}")]
        if kind == "result":
            self.completed = True
            if obj.get("status") != "success":
                error = obj.get("error")
                why = error.get("message") if isinstance(error, Mapping) else error
                self.failure = str(why or self.last_error or "the turn ended in an error")
            return self.observe_stats(obj.get("stats"))
        return [raw_line(line)]

    def observe_message(self, msg_id: str, model: str | None, tokens: Tokens) -> list[AgentEvent]:
        """One response's tokens from the session file: charged once (its id may come
        again, with its tool calls), never for a response of an earlier turn."""
        if msg_id in self.known_messages:
            return []
        growth = self._by_message.get(msg_id, Tokens()).growth_to(tokens)
        if not growth.total:
            return []
        self._by_message[msg_id] = self._by_message.get(msg_id, Tokens()) + growth
        return self._charge(model or self.model or "", growth)

    def observe_stats(self, stats: Any) -> list[AgentEvent]:
        """The process's usage, per model: what exceeds the charges already made (never
        down), one `Usage` per model priced at that model's price, and never more in all
        than the stats' totals (should a model be named otherwise in the session file)."""
        if not isinstance(stats, Mapping):
            return []
        models = stats.get("models")
        per_model = (
            {str(m): tokens_of(s) for m, s in models.items()}
            if isinstance(models, Mapping) and models
            else {self.model or "": tokens_of(stats)}
        )
        overall = Tokens()
        for total in per_model.values():
            overall = overall + total
        room = self.charged.growth_to(overall)
        out: list[AgentEvent] = []
        for model, total in per_model.items():
            growth = _at_most(self._charged_for(model).growth_to(total), room)
            if not growth.total:
                continue
            room = _minus(room, growth)
            out += self._charge(model, growth)
        return out

    def _charge(self, model: str, growth: Tokens) -> list[AgentEvent]:
        self._by_model[model] = self._charged_for(model) + growth
        self.charged = self.charged + growth
        name = model or None
        usd = cost_usd(
            self._price(name),
            input_tokens=growth.input,
            output_tokens=growth.output,
            cache_creation_tokens=growth.cache_creation,
            cache_read_tokens=growth.cache_read,
        )
        return [growth.as_usage(model=name, usd=usd)]

    def _charged_for(self, model: str) -> Tokens:
        return self._by_model.get(model, Tokens())

    def finish(self, exit_code: int | None = None, stderr_tail: str = "") -> Done | AgentFailed:
        if self.completed and self.failure is None:
            return Done(output=self.last_text, session_id=self.session_id, stop_reason="completed")
        detail = self.failure or self.last_error
        if detail is None:
            how = "was killed" if exit_code is None or exit_code < 0 else f"exited {exit_code}"
            detail = f"gemini {how} without finishing its turn"
            if stderr_tail.strip():
                detail += f": {stderr_tail.strip()}"
        else:
            detail = f"gemini: {detail}"
        retryable = not any(word in detail for word in NOT_RETRYABLE)
        return AgentFailed(detail, retryable=retryable, output=self.last_text)


def _at_most(a: Tokens, cap: Tokens) -> Tokens:
    return Tokens(
        min(a.input, cap.input),
        min(a.output, cap.output),
        min(a.cache_creation, cap.cache_creation),
        min(a.cache_read, cap.cache_read),
    )


def _minus(a: Tokens, b: Tokens) -> Tokens:
    return Tokens(
        a.input - b.input,
        a.output - b.output,
        a.cache_creation - b.cache_creation,
        a.cache_read - b.cache_read,
    )
