"""Size limits on text that an agent or an operator can make arbitrarily large.

An agent may print without end and an operator (or a script driving `ctl`) may
inject without end; a supervisor that keeps, journals or forwards all of it runs
out of memory or disk, and a prompt built from all of it costs real money. Every
limit lives here, in bytes of UTF-8, so that error messages, the README and the
tests all name the same numbers:

- agent output: the first `max_output_per_iteration` bytes of an iteration are
  journalled and shown in full; past it only the last `OUTPUT_TAIL_BYTES` are kept
  and the rest is counted and reported (`events.OutputTruncated`);
- injects, pending operator notes, prompt templates and rendered prompts are
  refused with an error naming the limit and the size, never cut silently;
- an iteration's detail sent over the control socket is cut in the middle, with a
  marker line saying how much and where to read all of it (the journal keeps it).
"""

from __future__ import annotations

from typing import BinaryIO

from supervisor.textsafe import utf8

KIB = 1024
MIB = 1024 * KIB

OUTPUT_PER_ITERATION_DEFAULT = 4 * MIB
"""`[supervisor] max_output_per_iteration`: agent output journalled in full per iteration.
4 MiB is some 50,000 lines of a chatty build, far more than a person or a model reads."""
OUTPUT_TAIL_BYTES = 64 * KIB
"""Past the cap, the end of the output is still kept (errors come last)."""

INJECT_MAX_BYTES = 64 * KIB
"""One operator note (`inject`)."""
NOTES_MAX_BYTES = 256 * KIB
"""All operator notes waiting for a loop's next prompt, together."""
PROMPT_TEMPLATE_MAX_BYTES = 256 * KIB
"""A prompt template, from loops.toml, a prompt_file or an edit."""
PROMPT_MAX_BYTES = 1 * MIB
"""A rendered prompt (placeholders expanded, operator notes added): what is sent."""
DETAIL_WIRE_MAX_BYTES = 8 * MIB
"""One iteration's detail (prompt, transcript, checks) as one line on the control socket,
JSON as sent; a transcript over it is cut in the middle (`control.bounds`). A diff too."""
DIFF_MAX_BYTES = 4 * MIB
"""A diff the console shows (`gitdiff.loop_diff`): git's output is read no further, the
rest is left out with a marker line (`loopvisor diff` prints all of it)."""


def size_of(text: str) -> int:
    """Bytes of `text` as UTF-8 (what the journal, the socket and a model receive)."""
    return len(utf8(text))


def format_size(n: int) -> str:
    """A size for people: `512 bytes`, `64 KiB`, `1.5 MiB`."""
    if n < KIB:
        return f"{n:,} bytes"
    for unit, scale in (("GiB", 1024 * MIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= scale:
            value = n / scale
            text = f"{value:.0f}" if value == int(value) or value >= 100 else f"{value:.1f}"
            return f"{text} {unit}"
    raise AssertionError("unreachable")


def too_large(what: str, size: int, limit: int) -> str | None:
    """An error naming `what`, its size and the limit; None when it fits."""
    if size <= limit:
        return None
    return f"{what} is {format_size(size)} ({size:,} bytes), over the limit of {format_size(limit)}"


def read_at_most(source: BinaryIO, limit: int) -> bytes | None:
    """Up to `limit` bytes of `source`, or None when it holds more: a file, a pipe or
    /dev/zero is read no further than the limit, never whole into memory."""
    raw = source.read(limit + 1)
    return None if len(raw) > limit else raw


def truncation_message(dropped: int, limit: int) -> str:
    """The marker line where an iteration's output was cut (transcript, history)."""
    return (
        f"✂ output truncated, {dropped:,} bytes dropped ({format_size(dropped)}): past the "
        f"{format_size(limit)} per-iteration limit only the last "
        f"{format_size(OUTPUT_TAIL_BYTES)} are kept"
    )


def output_limit_notice(iteration: int, limit: int) -> str:
    """Said live when an iteration's output reaches the limit (before the count is known)."""
    return (
        f"iteration {iteration}'s output reached the {format_size(limit)} per-iteration "
        f"limit: the rest is counted, not shown; its last {format_size(OUTPUT_TAIL_BYTES)} "
        "follow when the turn ends"
    )
