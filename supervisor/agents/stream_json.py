"""Pure parser of Claude Code's `--output-format stream-json` lines into agent events.

`StreamJsonParser.feed(line)` turns one stdout line into `AgentEvent`s; `finish()` gives
the turn's terminal event (`Done` / `AgentFailed`) once the process has exited. No I/O
here: the recorded lines in tests/data/stream_json/ drive it directly.

Line shapes (checked with claude 2.1.332, see tests/data/stream_json/):
- `system/init` -> `SessionStarted` plus one raw transcript line (model, cwd, tools).
- `system/api_retry` -> `Waiting(seconds=retry_delay_ms/1000, retry=False)`: the CLI
  retries by itself (`CLAUDE_CODE_MAX_RETRIES` caps it), so these waits must not use up
  the loop's `retries`; if the CLI gives up, its error result fails the turn once.
  The next line of progress yields `Resumed`. `system/status` is dropped (noise).
- `assistant` -> `TextDelta` per text block, `ToolCall` per tool_use block, and usage.
  The CLI prints one `assistant` line per content block, each repeating the message's
  usage, so usage is deduplicated by message id.
- `user` tool_result blocks -> `ToolResult`.
- `stream_event` (only with `--include-partial-messages`): `text_delta` -> `TextDelta`
  as tokens arrive; the text blocks of the later complete `assistant` line of the same
  message are then skipped. `message_start` / `message_delta` carry usage.
- `result` -> one reconciling `Usage` (see below), then the terminal event.
- `rate_limit_event` -> a raw line; with status "rejected" (a subscription usage
  limit, see `usagelimit`) it is also kept for `finish`.
- Anything else (unknown types, other system subtypes, non-JSON) -> `TextDelta(stream=
  "raw")` with the line itself, never an exception.

Usage accounting. Usage events are deltas. Per message id the parser keeps the maximum
seen per field and emits only the growth, so a message is counted once however often
it repeats. Without partial messages the `assistant` lines only carry the usage of
`message_start` (output_tokens = 1); with them, `message_delta` brings the real output
count while the message streams, which is what lets the loop kill a turn mid-way.
USD is given explicitly on every delta (priced with `price(model)`, 0.0 for a model
without a price) so that the parser knows to the cent what was charged. The `result`
line then settles the turn: the target is `model_usage_since_last_result` (all models
of this invocation, side calls included; its `costUSD` sum is the USD), or for older
CLIs `usage` and `total_cost_usd - usd_baseline`. Why not plain `total_cost_usd`:
after `--resume` it and `modelUsage` are cumulative over the whole session, while
`usage` and `model_usage_since_last_result` cover this invocation only. The final
delta brings each token field up to the target (never down: an over-count stays, the
safe side) and sets USD to exactly the CLI's figure, which may be a negative
correction when our price table was dearer than the CLI's own prices.

Terminal events (`finish`):
- `success` -> `Done(output=result, stop_reason="success")`.
- `error_max_turns`, `error_max_budget_usd` -> `Done(stop_reason=subtype)`: these are
  per-call caps the operator put in `args`; the iteration ends like any other, the
  checks decide, and the loop's own iterations and budget still bound the whole run.
- `is_error` after a usage limit -> `AgentFailed(usage_limit=...)`: the loop waits for
  the reset instead of counting a failure.
- `is_error` after an API failure (`terminal_reason: api_error`) -> `AgentFailed`,
  retryable for 408/409/429/5xx/529 or unknown status, not for other 4xx (auth,
  bad request: retrying cannot help).
- `error_during_execution` and unknown error subtypes -> `AgentFailed(retryable=True)`.
- No result line -> `AgentFailed(retryable=True)` with the exit code and stderr tail.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from supervisor.agents.base import (
    AgentEvent,
    AgentFailed,
    Done,
    Resumed,
    SessionStarted,
    TextDelta,
    ToolCall,
    ToolResult,
    Usage,
    Waiting,
)
from supervisor.agents.pricing import cost_usd
from supervisor.agents.stream_json_lines import (
    InitInfo,
    ResultInfo,
    decode,
    describe_init,
    number,
    raw_line,
    text_or_none,
    tool_output,
)
from supervisor.agents.usage import Tokens, positive_int
from supervisor.agents.usagelimit import UsageLimit, from_rate_limit_info, from_result
from supervisor.spec import Price
from supervisor.transcript import TextTail

LAST_TEXT_KEEP = 64 * 1024
"""Characters of the last assistant message kept as the turn's output."""

SYNTHETIC_MODEL = "<synthetic>"
"""The model name of messages the CLI makes up itself (e.g. "API Error: ...")."""
CAP_SUBTYPES = frozenset({"error_max_turns", "error_max_budget_usd"})
NOT_RETRYABLE_STATUS = frozenset({400, 401, 402, 403, 404, 405, 413, 422})


class StreamJsonParser:
    """Stateful: feed every stdout line in order, then call `finish` once."""

    def __init__(
        self,
        *,
        price: Callable[[str | None], Price | None] | None = None,
        usd_baseline: float = 0.0,
    ) -> None:
        """`price(model)` prices usage deltas; `usd_baseline` is the session's cumulative
        `total_cost_usd` before this invocation (only used when the CLI does not print
        `model_usage_since_last_result`)."""
        self._price = price or (lambda model: None)
        self._usd_baseline = usd_baseline
        self.init: InitInfo | None = None
        self.result: ResultInfo | None = None
        self.model: str | None = None
        self.seen = Tokens()
        """Tokens emitted so far (sum of all Usage deltas)."""
        self._usd_parts: list[float] = []
        self._per_message: dict[str, Tokens] = {}
        self._streamed_text: set[str] = set()
        self._last_texts = TextTail(LAST_TEXT_KEEP)
        """The text of the last message that had any (its tail: an endless reply is
        bounded; earlier messages' text lives only in the transcript)."""
        self._last_text_id: str | None = None
        self._current_stream_id: str | None = None
        self._anonymous = 0
        self._waiting = False
        self._text_ends_newline = True
        self.usage_limit: UsageLimit | None = None
        """A subscription usage limit refused a request (`rate_limit_event` rejected,
        or the result's `usage_limit_reached`)."""
        self.last_message_uuid: str | None = None
        """The `uuid` of the last `assistant` line: the session's chain entry a fork
        from this turn resumes at (`--resume-session-at`, `fork.py`)."""

    # -- reading -------------------------------------------------------------
    @property
    def session_id(self) -> str | None:
        if self.result is not None and self.result.session_id:
            return self.result.session_id
        return self.init.session_id if self.init is not None else None

    @property
    def usd_charged(self) -> float:
        """USD of all Usage deltas emitted so far."""
        return math.fsum(self._usd_parts)

    @property
    def last_text(self) -> str:
        """The text of the last assistant message that had any."""
        return self._last_texts.text()

    # -- feeding -------------------------------------------------------------
    def feed(self, line: str) -> list[AgentEvent]:
        """Events for one stdout line (possibly none). Never raises on bad input."""
        obj = decode(line)
        if obj is None:
            return [] if not line.strip() else [raw_line(line)]
        try:
            return self._dispatch(obj, line)
        except (TypeError, ValueError, AttributeError, KeyError):
            return [raw_line(line)]

    def _dispatch(self, obj: dict[str, Any], line: str) -> list[AgentEvent]:
        kind = obj.get("type")
        if kind == "system":
            return self._system(obj, line)
        out: list[AgentEvent] = []
        if kind in ("assistant", "user", "stream_event") and self._waiting:
            self._waiting = False
            out.append(Resumed())
        if kind == "assistant":
            out += self._assistant(obj)
        elif kind == "user":
            out += self._user(obj)
        elif kind == "stream_event":
            out += self._stream_event(obj)
        elif kind == "result":
            self._waiting = False
            out += self._result(obj)
        elif kind == "rate_limit_event":
            limit = from_rate_limit_info(obj.get("rate_limit_info"))
            if limit is not None:
                self.usage_limit = limit
            out.append(raw_line(line))
        else:
            out.append(raw_line(line))
        return out

    def _system(self, obj: dict[str, Any], line: str) -> list[AgentEvent]:
        subtype = obj.get("subtype")
        if subtype == "init":
            tools = obj.get("tools")
            info = InitInfo(
                session_id=text_or_none(obj.get("session_id")),
                model=text_or_none(obj.get("model")),
                cwd=text_or_none(obj.get("cwd")),
                tools=tuple(str(t) for t in tools) if isinstance(tools, list) else (),
                permission_mode=text_or_none(obj.get("permissionMode")),
                version=text_or_none(obj.get("claude_code_version")),
            )
            self.init = info
            if info.model and self.model is None:
                self.model = info.model
            out: list[AgentEvent] = []
            if info.session_id:
                out.append(SessionStarted(info.session_id))
            out.append(TextDelta(describe_init(info), stream="raw"))
            return out
        if subtype == "api_retry":
            delay = obj.get("retry_delay_ms")
            seconds = float(delay) / 1000 if isinstance(delay, int | float) else None
            status = obj.get("error_status")
            what = f"API {status}" if status is not None else "API error"
            if obj.get("error"):
                what += f" ({obj['error']})"
            attempt, most = obj.get("attempt"), obj.get("max_retries")
            tries = f"{attempt}/{most}" if most is not None else f"{attempt}"
            self._waiting = True
            return [Waiting(f"claude: {what}, CLI retry {tries}", seconds=seconds, retry=False)]
        if subtype == "status":
            return []
        return [raw_line(line)]

    def _assistant(self, obj: dict[str, Any]) -> list[AgentEvent]:
        self.last_message_uuid = text_or_none(obj.get("uuid")) or self.last_message_uuid
        message = obj.get("message")
        if not isinstance(message, Mapping):
            return [raw_line(json.dumps(obj))]
        msg_id = text_or_none(message.get("id")) or self._anonymous_id()
        model = text_or_none(message.get("model"))
        out: list[AgentEvent] = []
        if model == SYNTHETIC_MODEL:
            model = None
        else:
            usage = self._account(msg_id, model, Tokens.from_api(message.get("usage")))
            if usage is not None:
                out.append(usage)
        content = message.get("content")
        blocks = content if isinstance(content, list) else []
        if isinstance(content, str):
            blocks = [{"type": "text", "text": content}]
        for block in blocks:
            if not isinstance(block, Mapping):
                continue
            btype = block.get("type")
            if btype == "text" and msg_id not in self._streamed_text:
                text = block.get("text")
                if isinstance(text, str) and text:
                    out += self._text(msg_id, text)
            elif btype == "tool_use":
                tool_input = block.get("input")
                out.append(
                    ToolCall(
                        tool_id=str(block.get("id", "")),
                        name=str(block.get("name", "")),
                        input=dict(tool_input) if isinstance(tool_input, Mapping) else {},
                    )
                )
        return out

    def _user(self, obj: dict[str, Any]) -> list[AgentEvent]:
        message = obj.get("message")
        content = message.get("content") if isinstance(message, Mapping) else None
        out: list[AgentEvent] = []
        for block in content if isinstance(content, list) else []:
            if isinstance(block, Mapping) and block.get("type") == "tool_result":
                out.append(
                    ToolResult(
                        tool_id=str(block.get("tool_use_id", "")),
                        output=tool_output(block.get("content")),
                        is_error=bool(block.get("is_error", False)),
                    )
                )
        return out

    def _stream_event(self, obj: dict[str, Any]) -> list[AgentEvent]:
        event = obj.get("event")
        if not isinstance(event, Mapping):
            return []
        etype = event.get("type")
        msg_id = text_or_none(obj.get("api_message_id"))
        if etype == "message_start":
            message = event.get("message")
            if not isinstance(message, Mapping):
                return []
            msg_id = text_or_none(message.get("id")) or msg_id or self._anonymous_id()
            self._current_stream_id = msg_id
            model = text_or_none(message.get("model"))
            if model == SYNTHETIC_MODEL:
                return []
            usage = self._account(msg_id, model, Tokens.from_api(message.get("usage")))
            return [usage] if usage is not None else []
        msg_id = msg_id or self._current_stream_id
        if msg_id is None:
            return []
        if etype == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, Mapping) and delta.get("type") == "text_delta":
                text = delta.get("text")
                if isinstance(text, str) and text:
                    self._streamed_text.add(msg_id)
                    return self._text(msg_id, text)
            return []
        if etype == "message_delta":
            # Cumulative for this message; fields it leaves out stay as they were.
            usage = self._account(msg_id, None, Tokens.from_api(event.get("usage")))
            return [usage] if usage is not None else []
        return []

    def _result(self, obj: dict[str, Any]) -> list[AgentEvent]:
        since = obj.get("model_usage_since_last_result")
        usage = obj.get("usage")
        total = obj.get("total_cost_usd")
        total_usd = float(total) if isinstance(total, int | float) else None
        target = Tokens.from_api(usage)
        usd: float | None = None
        if isinstance(since, Mapping):
            per_model = [v for v in since.values() if isinstance(v, Mapping)]
            summed = Tokens()
            for entry in per_model:
                summed = summed + Tokens.from_model_usage(entry)
            target = target.maximum(summed)
            usd = math.fsum(number(entry.get("costUSD")) for entry in per_model)
        elif total_usd is not None:
            usd = max(0.0, total_usd - self._usd_baseline)
        status = obj.get("api_error_status")
        errors = obj.get("errors")
        denials = obj.get("permission_denials")
        text = obj.get("result")
        limit = from_result(obj)
        if limit is not None and (limit.resets_at is not None or self.usage_limit is None):
            self.usage_limit = limit
        self.result = ResultInfo(
            subtype=str(obj.get("subtype") or "unknown"),
            is_error=bool(obj.get("is_error", False)),
            text=text if isinstance(text, str) else None,
            session_id=text_or_none(obj.get("session_id")),
            num_turns=positive_int(obj.get("num_turns")),
            tokens=target,
            usd=usd,
            total_cost_usd=total_usd,
            terminal_reason=text_or_none(obj.get("terminal_reason")),
            api_error_status=status if isinstance(status, int) else None,
            errors=tuple(str(e) for e in errors) if isinstance(errors, list) else (),
            permission_denials=len(denials) if isinstance(denials, list) else 0,
        )
        extra = self.seen.growth_to(target)
        usd_delta = 0.0 if usd is None else usd - self.usd_charged
        out: list[AgentEvent] = []
        if extra.total or usd_delta:
            out.append(self._emit_usage(extra, usd_delta, self.model))
        return out

    # -- the end -------------------------------------------------------------
    def finish(self, exit_code: int | None = None, stderr_tail: str = "") -> Done | AgentFailed:
        """The terminal event: from the result line if there was one, else a failure."""
        res = self.result
        if res is None:
            how = "was killed" if exit_code is None or exit_code < 0 else f"exited {exit_code}"
            message = f"claude {how} without a result"
            if stderr_tail.strip():
                message += f": {stderr_tail.strip()}"
            return AgentFailed(message, retryable=True, output=self.last_text)
        output = res.text if res.text is not None else self.last_text
        if res.subtype == "success" and not res.is_error:
            return Done(output=output, session_id=res.session_id, stop_reason="success")
        if res.subtype in CAP_SUBTYPES:
            return Done(output=output, session_id=res.session_id, stop_reason=res.subtype)
        detail = "; ".join(res.errors) or (res.text or "").strip() or res.subtype
        if self.usage_limit is not None and res.is_error:
            limit = self.usage_limit
            if not limit.message:
                limit = dataclasses.replace(limit, message=detail)
            return AgentFailed(
                f"claude: usage limit: {detail}", retryable=True, output=output, usage_limit=limit
            )
        if res.terminal_reason == "api_error" or res.api_error_status is not None:
            status = res.api_error_status
            retryable = status is None or status not in NOT_RETRYABLE_STATUS
            label = f"API error {status}" if status is not None else "API error"
            return AgentFailed(f"claude: {label}: {detail}", retryable=retryable, output=output)
        return AgentFailed(f"claude: {res.subtype}: {detail}", retryable=True, output=output)

    # -- helpers -------------------------------------------------------------
    def _anonymous_id(self) -> str:
        self._anonymous += 1
        return f"<anonymous {self._anonymous}>"

    def _account(self, msg_id: str, model: str | None, tokens: Tokens) -> Usage | None:
        """Raise the message's counts to `tokens` (per field); the growth as a delta."""
        if model:
            self.model = model
        before = self._per_message.get(msg_id, Tokens())
        growth = before.growth_to(tokens)
        if not growth.total:
            return None
        self._per_message[msg_id] = before + growth
        price = self._price(model or self.model)
        usd = cost_usd(
            price,
            input_tokens=growth.input,
            output_tokens=growth.output,
            cache_creation_tokens=growth.cache_creation,
            cache_read_tokens=growth.cache_read,
        )
        return self._emit_usage(growth, usd, model or self.model)

    def _emit_usage(self, tokens: Tokens, usd: float, model: str | None) -> Usage:
        self.seen = self.seen + tokens
        self._usd_parts.append(usd)
        return Usage(
            input_tokens=tokens.input,
            output_tokens=tokens.output,
            cache_creation_tokens=tokens.cache_creation,
            cache_read_tokens=tokens.cache_read,
            usd=usd,
            model=model,
        )

    def _text(self, msg_id: str, text: str) -> list[AgentEvent]:
        out: list[AgentEvent] = []
        if msg_id != self._last_text_id and not self._text_ends_newline:
            out.append(TextDelta("\n"))
        if msg_id != self._last_text_id:
            self._last_texts = TextTail(LAST_TEXT_KEEP)
        self._last_text_id = msg_id
        self._last_texts.add(text)
        self._text_ends_newline = text.endswith("\n")
        out.append(TextDelta(text))
        return out


def parse_lines(lines: Iterable[str], **kwargs: Any) -> list[AgentEvent]:
    """All events of a finished recording, terminal event included (exit code 0)."""
    parser = StreamJsonParser(**kwargs)
    events: list[AgentEvent] = []
    for line in lines:
        events += parser.feed(line)
    events.append(parser.finish(0))
    return events
