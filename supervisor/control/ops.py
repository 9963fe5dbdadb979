"""Every control op, defined once: its arguments (validation, defaults, encoding), how
the server runs it, how the client decodes its result, and its row in docs/protocol.md
(`control.opdef` says what a definition holds).

A new operator action is one `Op` here plus its `SupervisorHandle` method (the
Protocol in `api`, the in-process `runtime.Supervisor`, a one-line
`RemoteSupervisor` method that calls `RemoteSupervisor.call(ops.X, ...)`). The
server dispatches by name through `BY_NAME`, `protocol.parse_request` validates
with `Op.problem`, the hello lists `NAMES`, and the docs' table of ops is
`markdown_table()` (tests/control/test_control_ops.py fails when the two differ;
`scripts/protocol_ops.py` rewrites it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Final

import anyio

from supervisor.api import (
    ControlError,
    IterationDetail,
    IterationSummary,
    LoopDiff,
    RunSnapshot,
    StepIn,
)
from supervisor.control import bounds, opdef
from supervisor.control.opdef import (
    INTEGER,
    OPT_BOOL,
    OPT_INTEGER,
    OPT_LIMITS,
    OPT_STRING,
    SENT,
    STRING,
    Arg,
    Args,
    Op,
    Session,
)
from supervisor.lines import LineKind, TranscriptLine
from supervisor.sizes import DETAIL_WIRE_MAX_BYTES, format_size
from supervisor.spec import Limits

SNAPSHOT_TAIL: Final = 200
"""Transcript lines per loop in a `snapshot` unless the request says otherwise."""
TRANSCRIPT_LIMIT: Final = 500
MAX_TRANSCRIPT_LIMIT: Final = 10_000
ITERATIONS_LIMIT: Final = 1000
MAX_ITERATIONS_LIMIT: Final = 10_000
SUBSCRIPTION_BUFFER: Final = 2000
"""Events a subscriber's server-side queue holds unless it asks for more."""
MAX_SUBSCRIPTION_BUFFER: Final = 20_000


# -- results ------------------------------------------------------------------------
def _none(_: Any) -> None:
    return None


def _str(value: Any) -> str:
    return str(value)


def _strings(value: Any) -> list[str]:
    return [str(x) for x in value]


def _plain_lines(value: Any) -> list[TranscriptLine]:
    """Transcript texts from the wire, of unknown kind (the op sends texts only)."""
    return [TranscriptLine(LineKind.PLAIN, str(x)) for x in value]


def _dict(value: Any) -> dict[str, Any]:
    return dict(value)


def _summaries(value: Any) -> list[IterationSummary]:
    return [IterationSummary.from_dict(x) for x in value]


# -- handlers -----------------------------------------------------------------------
async def _snapshot(s: Session, a: Args) -> Any:
    return (await s.handle.snapshot(tail=a["tail"])).to_dict(kinds=True)


async def _pause(s: Session, a: Args) -> None:
    await s.handle.pause(a["loop"])


async def _resume(s: Session, a: Args) -> None:
    await s.handle.resume(a["loop"])


async def _stop(s: Session, a: Args) -> None:
    await s.handle.stop(a["loop"])


async def _restart(s: Session, a: Args) -> None:
    await s.handle.restart(a["loop"])


async def _inject(s: Session, a: Args) -> None:
    await s.handle.inject(a["loop"], a["text"])


async def _edit(s: Session, a: Args) -> None:
    await s.handle.edit(
        a["loop"], prompt=a["prompt"], max_iterations=a["max_iterations"], limits=a["limits"]
    )


async def _budget(s: Session, a: Args) -> None:
    await s.handle.budget(a["limits"])


async def _step_in(s: Session, a: Args) -> Any:
    return (await s.handle.step_in(a["loop"])).to_dict()


async def _chat(s: Session, a: Args) -> str:
    return await s.handle.chat(a["loop"], a["text"])


async def _hand_back(s: Session, a: Args) -> None:
    await s.handle.hand_back(a["loop"])


async def _transcript(s: Session, a: Args) -> list[str]:
    lines = await s.handle.transcript(a["loop"], before=a["before"], limit=a["limit"])
    return [line.text for line in lines]  # v1 sends texts; kinds travel in snapshots


async def _reload(s: Session, a: Args) -> Any:
    return await s.reload()


async def _shutdown(s: Session, a: Args) -> None:
    s.shutdown()


async def _subscribe(s: Session, a: Args) -> object:
    await s.subscribe(a["max_buffer"], a["snapshot"])
    return SENT


async def _unsubscribe(s: Session, a: Args) -> None:
    s.unsubscribe()


async def _iterations(s: Session, a: Args) -> list[dict[str, Any]]:
    return bounds.iteration_rows(await s.handle.iterations(a["loop"], limit=a["limit"]))


async def _diff(s: Session, a: Args) -> dict[str, Any]:
    if a["iteration"] is not None and a["iteration"] < 1:
        raise ControlError("iteration numbers start at 1")
    diff = await s.handle.diff(a["loop"], iteration=a["iteration"])
    return await anyio.to_thread.run_sync(bounds.loop_diff, diff, s.detail_max)


async def _iteration(s: Session, a: Args) -> dict[str, Any]:
    if a["iteration"] < 1:
        raise ControlError("iteration numbers start at 1")
    detail = await s.handle.iteration(a["loop"], a["iteration"])
    # Measuring and cutting megabytes of text: off the event loop the loops share.
    return await anyio.to_thread.run_sync(bounds.iteration_detail, detail, s.detail_max)


async def _land(s: Session, a: Args) -> str:
    return await s.handle.land(
        a["loop"], squash=a["squash"], into=a["into"], push=a["push"], pr=a["pr"]
    )


async def _fork(s: Session, a: Args) -> str:
    if a["iteration"] < 1:
        raise ControlError("iteration numbers start at 1")
    return await s.handle.fork(
        a["loop"], iteration=a["iteration"], name=a["name"], prompt=a["prompt"]
    )


async def _add(s: Session, a: Args) -> str:
    return await s.handle.add(
        a["name"],
        like=a["like"],
        prompt=a["prompt"],
        max_iterations=a["max_iterations"],
        limits=a["limits"],
    )


# -- the table ----------------------------------------------------------------------
def _clamp(low: int, high: int, default: int) -> Callable[[Any], int]:
    """`0` means the default (as it always has on the wire); else clamped to [low, high]."""
    return lambda v: min(high, max(low, v or default))


def _limits_to_wire(limits: Limits) -> dict[str, Any]:
    return dataclasses.asdict(limits)


def _limits_from_wire(raw: dict[str, Any]) -> Limits:
    return Limits(**raw)


LOOP = Arg("loop", STRING, "LOOP", required=True)
ANY_LOOP = Arg("loop", OPT_STRING, "LOOP or null (every loop)")
TEXT = Arg("text", STRING, "string", required=True)

SNAPSHOT: Final = Op(
    "snapshot",
    (
        Arg(
            "tail",
            OPT_INTEGER,
            f"int ≥ 0 (default {SNAPSHOT_TAIL}): transcript lines per loop; 0 for cheap polling",
            default=SNAPSHOT_TAIL,
            normalize=lambda v: max(0, v),
        ),
    ),
    _snapshot,
    RunSnapshot.from_dict,
    "the run snapshot (below)",
)
PAUSE: Final = Op(
    "pause", (ANY_LOOP,), _pause, _none, "null — pauses at the loop's next safe point"
)
RESUME: Final = Op("resume", (ANY_LOOP,), _resume, _none, "null")
STOP: Final = Op(
    "stop", (ANY_LOOP,), _stop, _none, "null — cancels the running turn and kills its process group"
)
RESTART: Final = Op(
    "restart", (LOOP,), _restart, _none, "null — iteration 1 again (spent budget stays spent)"
)
LIMITS: Final = Arg(
    "limits",
    OPT_LIMITS,
    "`{tokens, usd, wall, cpu}`",
    normalize=_limits_from_wire,
    to_wire=_limits_to_wire,
)
"""A loop's (edit) or the run's (budget) limits, on the wire as a JSON object."""

INJECT: Final = Op("inject", (LOOP, TEXT), _inject, _none, "null — added to the next prompt")
EDIT: Final = Op(
    "edit",
    (
        LOOP,
        Arg("prompt", OPT_STRING, "string"),
        Arg("max_iterations", OPT_INTEGER, "int"),
        LIMITS,
    ),
    _edit,
    _none,
    "null — from the loop's next iteration. `limits` replaces all four limits (a missing"
    " key or null is unlimited); send the current ones for the keys you keep",
)
STEP_IN: Final = Op(
    "step_in",
    (LOOP,),
    _step_in,
    StepIn.from_dict,
    "`{loop, agent_kind, workspace, session_id, resume_argv, chat}` — the loop is paused now",
)
CHAT: Final = Op(
    "chat",
    (LOOP, TEXT),
    _chat,
    _str,
    "the agent's reply (string); the loop must be stepped into (paused)",
)
HAND_BACK: Final = Op(
    "hand_back", (LOOP,), _hand_back, _none, "null — the loop resumes from the longer conversation"
)
TRANSCRIPT: Final = Op(
    "transcript",
    (
        LOOP,
        Arg("before", OPT_INTEGER, "int"),
        Arg(
            "limit",
            OPT_INTEGER,
            f"int (default {TRANSCRIPT_LIMIT}, clamped to 1–{MAX_TRANSCRIPT_LIMIT:,})",
            default=TRANSCRIPT_LIMIT,
            normalize=_clamp(1, MAX_TRANSCRIPT_LIMIT, TRANSCRIPT_LIMIT),
        ),
    ),
    _transcript,
    _plain_lines,
    "list of lines, oldest first",
)
RELOAD: Final = Op(
    "reload",
    (),
    _reload,
    _dict,
    "`{applied: [...], needs_restart: [...]}` (see Reload) or a `config` error",
)
SHUTDOWN: Final = Op(
    "shutdown",
    (),
    _shutdown,
    _none,
    "null; then the run is stopped, the summary event is sent to subscribers, the"
    " connections are closed and the server exits",
)
SUBSCRIBE: Final = Op(
    "subscribe",
    (
        Arg(
            "max_buffer",
            OPT_INTEGER,
            f"int (1–{MAX_SUBSCRIPTION_BUFFER:,}, default {SUBSCRIPTION_BUFFER:,})",
            default=SUBSCRIPTION_BUFFER,
            normalize=_clamp(1, MAX_SUBSCRIPTION_BUFFER, SUBSCRIPTION_BUFFER),
        ),
        Arg("snapshot", OPT_BOOL, "bool", default=False, normalize=bool),
    ),
    _subscribe,
    _dict,
    "`{subscribed: true, max_buffer, snapshot?}`, then events",
)
UNSUBSCRIBE: Final = Op("unsubscribe", (), _unsubscribe, _none, "null")
ITERATIONS: Final = Op(
    "iterations",
    (
        LOOP,
        Arg(
            "limit",
            OPT_INTEGER,
            f"int (default {ITERATIONS_LIMIT:,}, clamped to 1–{MAX_ITERATIONS_LIMIT:,})",
            default=ITERATIONS_LIMIT,
            normalize=_clamp(1, MAX_ITERATIONS_LIMIT, ITERATIONS_LIMIT),
        ),
    ),
    _iterations,
    _summaries,
    "the newest `limit` attempts of the loop's iterations in this run, oldest first:"
    " `[{iteration, attempt, outcome, reason, tokens, usd, started, ended, commit}]`"
    " (see History)",
)
ITERATION: Final = Op(
    "iteration",
    (LOOP, Arg("iteration", INTEGER, "int ≥ 1", required=True)),
    _iteration,
    IterationDetail.from_dict,
    "`{loop, iteration, summary, prompt, transcript, checks}` (see History); at most"
    f" {format_size(DETAIL_WIRE_MAX_BYTES)} of JSON: a longer transcript is cut in the middle",
)
LAND: Final = Op(
    "land",
    (
        LOOP,
        Arg("squash", OPT_BOOL, "bool: one squashed commit", default=False, normalize=bool),
        Arg("into", OPT_STRING, "branch (default: the one the worktree was made from)"),
        Arg("push", OPT_STRING, "remote: push the branch there instead of merging"),
        Arg("pr", OPT_BOOL, "bool: push it and open a pull request", default=False, normalize=bool),
    ),
    _land,
    _str,
    "what was done (string); a conflict or a refusal is an error and changes nothing",
)

DIFF: Final = Op(
    "diff",
    (LOOP, Arg("iteration", OPT_INTEGER, "int ≥ 1 (default: the loop's whole diff)")),
    _diff,
    LoopDiff.from_dict,
    "`{loop, iteration, base, head, stat, text, note, truncated}` (see Diff): the worktree"
    " loop's patch against its base, or one iteration's checkpoint commit against its"
    f" parent; at most {format_size(DETAIL_WIRE_MAX_BYTES)} of JSON: a longer patch is cut",
)

FORK: Final = Op(
    "fork",
    (
        LOOP,
        Arg("iteration", INTEGER, "int ≥ 1: the parent's iteration to start from", required=True),
        Arg("name", OPT_STRING, "the new loop's name (default: LOOP-forkN)"),
        Arg("prompt", OPT_STRING, "its prompt template (default: the parent's)"),
    ),
    _fork,
    _str,
    "what was done (string): a new loop, its worktree at that iteration's commit, its"
    " conversation restored where the agent can, its own budget",
)

BUDGET: Final = Op(
    "budget",
    (LIMITS,),
    _budget,
    _none,
    "null — the run's global limits, replaced like edit's (a missing key or null is"
    ' unlimited); loops paused by the global budget (`on_exhausted = "pause"`) go on',
)

ADD: Final = Op(
    "add",
    (
        Arg("name", STRING, "the new loop's name (a valid loop name, not taken)", required=True),
        Arg("like", STRING, "LOOP of the run it is made like", required=True),
        Arg("prompt", OPT_STRING, "its prompt template (default: the like-loop's)"),
        Arg("max_iterations", OPT_INTEGER, "int (default: the like-loop's)"),
        LIMITS,
    ),
    _add,
    _str,
    "what was done (string): a new loop with the like-loop's agent, workspace kind,"
    " checks and budget settings (a worktree loop: its own worktree and branch), its"
    " own prompt, max_iterations and limits (default: the like-loop's). No agent or"
    " command travels in the request",
)

OPS: Final[tuple[Op[Any], ...]] = (
    SNAPSHOT,
    PAUSE,
    RESUME,
    STOP,
    RESTART,
    INJECT,
    EDIT,
    STEP_IN,
    CHAT,
    HAND_BACK,
    TRANSCRIPT,
    RELOAD,
    SHUTDOWN,
    SUBSCRIBE,
    UNSUBSCRIBE,
    ITERATIONS,
    ITERATION,
    DIFF,
    LAND,
    FORK,
    BUDGET,
    ADD,
)
"""In the order the hello lists them (new ops go last: v1 only adds)."""
BY_NAME: Final[Mapping[str, Op[Any]]] = {op.name: op for op in OPS}
NAMES: Final = tuple(BY_NAME)


def markdown_table() -> str:
    """The table of every op in docs/protocol.md."""
    return opdef.markdown_table(OPS)
