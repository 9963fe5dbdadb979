"""How a control op is defined: its arguments (type check, default, normalizing on the
server, encoding on the client), its server-side handler, its client-side result
decoder, and its row in docs/protocol.md. The ops themselves are in `control.ops`.

An op's handler sees a `Session`, never a socket: what the handle offers, plus
what only the serving connection can do (reload, shutdown, subscriptions).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, Protocol, TypeAlias, TypeVar

from supervisor.api import SupervisorHandle
from supervisor.spec import Limits

R = TypeVar("R")
Args: TypeAlias = Mapping[str, Any]

SENT: Final = object()
"""A handler's result when it wrote its own response (`subscribe`: before any event)."""


class Session(Protocol):
    """What the server side of one request may use (`control.connection` provides it)."""

    @property
    def handle(self) -> SupervisorHandle: ...

    @property
    def detail_max(self) -> int:
        """Wire bytes an iteration's detail may take (`sizes.DETAIL_WIRE_MAX_BYTES`)."""
        ...

    async def reload(self) -> Any:
        """The serve command's reload (ControlError when this server has none)."""
        ...

    def shutdown(self) -> None:
        """The serve command's shutdown (ControlError when this server has none)."""
        ...

    async def subscribe(self, max_buffer: int, snapshot: bool) -> None:
        """Start forwarding events; writes the response itself, before the first one."""
        ...

    def unsubscribe(self) -> None: ...


# -- argument types -------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


LIMIT_KEYS: Final = tuple(f.name for f in dataclasses.fields(Limits))


def _limits_ok(v: Any) -> bool:
    if v is None:
        return True
    if not isinstance(v, dict) or not set(v) <= set(LIMIT_KEYS):
        return False
    return all(x is None or _is_num(x) for x in v.values()) and (
        v.get("tokens") is None or _is_int(v["tokens"])
    )


@dataclass(frozen=True, slots=True)
class ArgType:
    check: Callable[[Any], bool]
    hint: str
    """What a bad value is told it must be."""


STRING = ArgType(lambda v: isinstance(v, str), "a string")
OPT_STRING = ArgType(lambda v: v is None or isinstance(v, str), "a string or null")
INTEGER = ArgType(_is_int, "an integer")
OPT_INTEGER = ArgType(lambda v: v is None or _is_int(v), "an integer or null")
OPT_BOOL = ArgType(lambda v: v is None or isinstance(v, bool), "true, false or null")
OPT_LIMITS = ArgType(
    _limits_ok, "null or an object with tokens (int), usd, wall, cpu (numbers or null)"
)


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class Arg:
    name: str
    type: ArgType
    doc: str
    required: bool = False
    default: Any = None
    """The server's value when the arg is absent or null."""
    normalize: Callable[[Any], Any] = _same
    """Server side: a present, valid, non-null wire value to what the handler gets."""
    to_wire: Callable[[Any], Any] = _same
    """Client side: a Python value (not None) to JSON."""


Handler: TypeAlias = Callable[[Session, Args], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Op(Generic[R]):
    name: str
    args: tuple[Arg, ...]
    run: Handler
    """Server side: the decoded args to a JSON-ready result (or `SENT`)."""
    result: Callable[[Any], R]
    """Client side: the JSON result to what the handle method returns."""
    doc: str
    """The result column of the docs' table."""

    def problem(self, args: Args) -> str | None:
        """What is wrong with a request's args (None: nothing); unknown args are typos."""
        known = {a.name for a in self.args}
        unknown = set(args) - known
        if unknown:
            return f"{self.name}: unknown arg(s): {', '.join(sorted(unknown))}"
        for arg in self.args:
            if arg.name not in args:
                if arg.required:
                    return f"{self.name}: missing arg {arg.name!r}"
            elif not arg.type.check(args[arg.name]):
                return f"{self.name}: {arg.name!r} must be {arg.type.hint}"
        return None

    def decode(self, args: Args) -> dict[str, Any]:
        """Validated wire args to the handler's: defaults filled in, values normalized."""
        out = {}
        for arg in self.args:
            value = args.get(arg.name)
            out[arg.name] = arg.default if value is None else arg.normalize(value)
        return out

    def encode(self, args: Args) -> dict[str, Any]:
        """A client's Python args to JSON (None stays null: the server's default)."""
        by_name = {a.name: a for a in self.args}
        return {k: None if v is None else by_name[k].to_wire(v) for k, v in args.items()}


# -- docs ---------------------------------------------------------------------------
def _args_cell(op: Op[Any]) -> str:
    if not op.args:
        return "–"
    return "; ".join(f"{'' if a.required else 'optional '}`{a.name}`: {a.doc}" for a in op.args)


def markdown_table(ops: Iterable[Op[Any]]) -> str:
    """The table of `ops` in docs/protocol.md (`scripts/protocol_ops.py` writes it)."""
    rows = [(f"`{op.name}`", _args_cell(op), op.doc) for op in ops]
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'op':<{width}} | args | result |", f"|{'-' * (width + 2)}|------|--------|"]
    lines += [f"| {name:<{width}} | {args} | {doc} |" for name, args, doc in rows]
    return "\n".join(lines) + "\n"
