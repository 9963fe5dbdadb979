"""Agent kinds: the Agent protocol (`base`), one declaration per kind (`kinds/`), the
registry that lists them (`registry`), and their implementations (`sim`, `command`,
`anthropic`, `claude_code`), each imported only when a loop uses its kind, so that
e.g. the anthropic SDK is loaded only when an API loop exists."""

from __future__ import annotations

from supervisor.agents.kind import AgentContext
from supervisor.agents.registry import build_agent

__all__ = ["AgentContext", "build_agent"]
