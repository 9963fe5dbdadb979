"""Pure parser of `codex exec --json` lines (and of Codex's session file) into agent events.

`CodexJsonParser.feed(line)` turns one stdout line into `AgentEvent`s; `finish()` gives
the turn's terminal event once the process has exited. No I/O here: the recordings in
tests/data/codex/ (codex-cli 0.169.0 against tests/fake_openai.py) drive it directly.

Line shapes (checked with codex-cli 0.169.0):
- `thread.started {thread_id}` -> `SessionStarted` (the id `codex exec resume` takes).
- `turn.started` -> nothing.
- `item.started` / `item.completed {item: {id, type, ...}}`:
  `agent_message {text}` -> `TextDelta` (complete messages: `--json` has no token
  deltas); `reasoning {text}` -> a raw line; `command_execution {command,
  aggregated_output, exit_code, status}` -> `ToolCall("shell")` when it starts and
  `ToolResult` when it completes; `file_change {changes: [{path, kind}], status}` ->
  `ToolCall("apply_patch")` / `ToolResult`; `mcp_tool_call {server, tool, arguments,
  result, error}` and `web_search {query}` likewise; `todo_list` and `error` items ->
  raw lines. `item.updated` is dropped (a todo list's progress).
- `error {message}` outside an item: the CLI's own retries ("Reconnecting... 2/5 ...")
  -> `Waiting(retry=False)`: it retries by itself, so these must not use up the loop's
  retries; the next item yields `Resumed`.
- `turn.completed {usage: {input_tokens, cached_input_tokens, cache_write_input_tokens,
  output_tokens, reasoning_output_tokens}}`: the *thread's* totals so far. A fresh
  thread's first turn reports its own usage; after `codex exec resume` the counts
  include every earlier turn of the thread (seen: 9,387 then 18,853 input tokens for
  two one-message turns), so the parser subtracts `baseline`, the thread's totals
  before this turn.
- `turn.failed {error: {message}}` -> the turn's failure.

Usage as it arrives. `--json` reports usage once, at the turn's end; Codex's session
file (`$CODEX_HOME/sessions/.../rollout-*-THREAD.jsonl`) records each model response's
usage twice (codex-cli 0.169.0, tests/data/codex/session_tool_turn.jsonl):
- a `token_usage_record {usage, turn_token_usage, thread_token_usage}` line as soon as
  the response has landed, *before* its tool calls run;
- an `event_msg` of type `token_count {info: {total_token_usage}}` only once those
  tool calls have finished (or yielded, after exec_command's `yield_time_ms`), a few
  milliseconds before Codex sends the next request.
Waiting for `token_count` therefore raced Codex's next request; `session_total` takes
the thread's running total from both, so the earlier one counts. The agent tails the
file and feeds each total to `observe_total`. Both sources raise the same per-field
counters (never down), so nothing is charged twice; `turn.completed` settles the turn.

Token dimensions. OpenAI's `input_tokens` include the cached ones and `output_tokens`
the reasoning ones (the fake server reports them so and Codex passes them through), so
a delta is charged as input = input - cached - cache writes, cache_read = cached,
cache_creation = cache writes, output = output: their sum is what the provider bills.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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
    Waiting,
)
from supervisor.agents.pricing import cost_usd
from supervisor.agents.stream_json_lines import decode, raw_line, text_or_none, tool_output
from supervisor.agents.usage import Tokens, positive_int

NOT_RETRYABLE = ("400 Bad Request", "401 Unauthorized", "403 Forbidden", "404 Not Found")
"""Statuses in a failure message that retrying cannot fix (a key, a model name)."""


def tokens_of(usage: Any) -> Tokens:
    """Codex's usage object (turn.completed, token_count) in the ledger's dimensions."""
    if not isinstance(usage, Mapping):
        return Tokens()
    total_in = positive_int(usage.get("input_tokens"))
    cached = positive_int(usage.get("cached_input_tokens"))
    written = positive_int(usage.get("cache_write_input_tokens"))
    return Tokens(
        input=max(0, total_in - cached - written),
        output=positive_int(usage.get("output_tokens")),
        cache_creation=written,
        cache_read=cached,
    )


def session_total(line: str) -> tuple[Tokens | None, str | None]:
    """From one line of Codex's session file: the thread's running total (a
    `token_usage_record`, written as a response lands, or the later `token_count`
    event) and the model (a `turn_context`), whichever it holds."""
    obj = decode(line)
    if obj is None:
        return None, None
    payload = obj.get("payload")
    if not isinstance(payload, Mapping):
        return None, None
    if obj.get("type") == "turn_context":
        return None, text_or_none(payload.get("model"))
    if obj.get("type") == "token_usage_record":
        thread = payload.get("thread_token_usage")
        return (tokens_of(thread) if isinstance(thread, Mapping) else None), None
    if obj.get("type") == "event_msg" and payload.get("type") == "token_count":
        info = payload.get("info")
        if isinstance(info, Mapping) and isinstance(info.get("total_token_usage"), Mapping):
            return tokens_of(info["total_token_usage"]), None
    return None, None


class CodexJsonParser:
    def __init__(
        self,
        *,
        price: Any = None,
        model: str | None = None,
        baseline: Tokens | None = None,
    ) -> None:
        self._price = price if callable(price) else (lambda _model: None)
        self.model = model
        self.baseline = baseline or Tokens()
        """The thread's totals before this turn (zero for a new thread)."""
        self.charged = Tokens()
        """What this turn has charged so far."""
        self.thread_id: str | None = None
        self.thread_total: Tokens | None = None
        """The thread's totals as `turn.completed` last reported them."""
        self.completed = False
        self.failure: str | None = None
        self.last_error: str | None = None
        self.last_text = ""
        self._waiting = False
        self._started: set[str] = set()
        self._text_ends_newline = True

    # -- lines -----------------------------------------------------------------
    def feed(self, line: str) -> list[AgentEvent]:
        if not line.strip():
            return []
        obj = decode(line)
        if obj is None:
            return [raw_line(line)]
        kind = obj.get("type")
        out: list[AgentEvent] = []
        if self._waiting and kind != "error":
            self._waiting = False
            out.append(Resumed())
        if kind == "thread.started":
            self.thread_id = text_or_none(obj.get("thread_id"))
            if self.thread_id:
                out.append(SessionStarted(self.thread_id))
        elif kind == "turn.started":
            pass
        elif kind in ("item.started", "item.completed"):
            item = obj.get("item")
            if isinstance(item, Mapping):
                out += self._item(item, done=kind == "item.completed")
        elif kind == "item.updated":
            pass
        elif kind == "error":
            message = str(obj.get("message") or "error")
            self.last_error = message
            self._waiting = True
            out.append(Waiting(f"codex: {message}", retry=False))
        elif kind == "turn.completed":
            self.completed = True
            total = tokens_of(obj.get("usage"))
            self.thread_total = total
            out += self.observe_total(total)
        elif kind == "turn.failed":
            error = obj.get("error")
            why = error.get("message") if isinstance(error, Mapping) else error
            self.failure = str(why or "turn failed")
        else:
            out.append(raw_line(line))
        return out

    def observe_total(self, total: Tokens) -> list[AgentEvent]:
        """The thread's running total (from `turn.completed` or the session file): the
        growth of this turn's share over what was charged, as one `Usage` delta."""
        turn = self.baseline.growth_to(total)
        growth = self.charged.growth_to(turn)
        if not growth.total:
            return []
        self.charged = self.charged + growth
        usd = cost_usd(
            self._price(self.model),
            input_tokens=growth.input,
            output_tokens=growth.output,
            cache_creation_tokens=growth.cache_creation,
            cache_read_tokens=growth.cache_read,
        )
        return [growth.as_usage(model=self.model, usd=usd)]

    def _item(self, item: Mapping[str, Any], *, done: bool) -> list[AgentEvent]:
        itype = item.get("type")
        item_id = str(item.get("id") or "")
        if itype == "agent_message":
            text = item.get("text")
            if not done or not isinstance(text, str) or not text:
                return []
            self.last_text = text
            out: list[AgentEvent] = []
            if not self._text_ends_newline:
                out.append(TextDelta("\n"))
            self._text_ends_newline = text.endswith("\n")
            out.append(TextDelta(text))
            return out
        if itype == "reasoning":
            text = item.get("text")
            return [raw_line(f"(reasoning) {text}")] if done and isinstance(text, str) else []
        if itype in ("error", "todo_list"):
            if not done:
                return []
            if itype == "error":
                return [raw_line(f"codex: {item.get('message', '')}")]
            todo = item.get("items")
            entries = todo if isinstance(todo, list) else []
            marks = [
                f"[{'x' if isinstance(e, Mapping) and e.get('completed') else ' '}] "
                f"{e.get('text', '') if isinstance(e, Mapping) else e}"
                for e in entries
            ]
            return [raw_line("plan: " + "; ".join(marks))]
        call = _call_of(itype, item)
        if call is None:
            return [raw_line(json.dumps(dict(item)))] if done else []
        name, tool_input = call
        out = []
        if item_id not in self._started:
            self._started.add(item_id)
            out.append(ToolCall(tool_id=item_id, name=name, input=tool_input))
        if done:
            output, is_error = _result_of(itype, item)
            out.append(ToolResult(tool_id=item_id, output=output, is_error=is_error))
        return out

    # -- the end -----------------------------------------------------------------
    def finish(self, exit_code: int | None = None, stderr_tail: str = "") -> Done | AgentFailed:
        if self.completed and self.failure is None:
            return Done(output=self.last_text, session_id=self.thread_id, stop_reason="completed")
        detail = self.failure or self.last_error
        if detail is None:
            how = "was killed" if exit_code is None or exit_code < 0 else f"exited {exit_code}"
            detail = f"codex {how} without finishing its turn"
            if stderr_tail.strip():
                detail += f": {stderr_tail.strip()}"
        else:
            detail = f"codex: {detail}"
        retryable = not any(status in detail for status in NOT_RETRYABLE)
        return AgentFailed(detail, retryable=retryable, output=self.last_text)


def _call_of(itype: Any, item: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """A tool item as (name, input), or None for an item that is not a tool."""
    if itype == "command_execution":
        return "shell", {"command": str(item.get("command", ""))}
    if itype == "file_change":
        changes = item.get("changes")
        return "apply_patch", {"changes": changes if isinstance(changes, list) else []}
    if itype == "mcp_tool_call":
        args = item.get("arguments")
        name = f"{item.get('server', 'mcp')}.{item.get('tool', '?')}"
        return name, dict(args) if isinstance(args, Mapping) else {"arguments": args}
    if itype == "web_search":
        return "web_search", {"query": str(item.get("query", ""))}
    return None


def _result_of(itype: Any, item: Mapping[str, Any]) -> tuple[str, bool]:
    failed = item.get("status") == "failed"
    if itype == "command_execution":
        code = item.get("exit_code")
        output = tool_output(item.get("aggregated_output"))
        return output, failed or (isinstance(code, int) and code != 0)
    if itype == "file_change":
        changes = item.get("changes")
        lines = [
            f"{c.get('kind', '?')} {c.get('path', '?')}"
            for c in (changes if isinstance(changes, list) else [])
            if isinstance(c, Mapping)
        ]
        return "\n".join(lines), failed
    if itype == "mcp_tool_call":
        error = item.get("error")
        if error:
            return tool_output(error.get("message") if isinstance(error, Mapping) else error), True
        result = item.get("result")
        content = result.get("content") if isinstance(result, Mapping) else result
        return tool_output(content), failed
    return tool_output(item.get("result")), failed


def parse_lines(lines: list[str], **kwargs: Any) -> list[AgentEvent]:
    """All events of a finished recording, terminal event included (exit code 0)."""
    parser = CodexJsonParser(**kwargs)
    events: list[AgentEvent] = []
    for line in lines:
        events += parser.feed(line)
    events.append(parser.finish(0))
    return events
