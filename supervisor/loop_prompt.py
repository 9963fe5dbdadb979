"""An iteration's prompt: the loop's template with its placeholders filled in and
the operator's notes added, refused (the loop ends `failed`) when it is too large.

One place for what the agent is sent, so the prompt as sent, the prompt journaled
in `IterationStarted` and the notes queued again after a re-run cannot disagree.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING

from supervisor.sizes import PROMPT_MAX_BYTES, size_of, too_large
from supervisor.textsafe import valid_text
from supervisor.turn import LAST_OUTPUT_LIMIT

if TYPE_CHECKING:
    from supervisor.loop import LoopRunner


def render_prompt(runner: LoopRunner, n: int) -> str | None:
    """Iteration `n`'s prompt; None after ending the loop `failed` when it would be
    over `PROMPT_MAX_BYTES` (a template repeating `$check_output` can multiply a
    check's output): an error naming the size, never a cut prompt sent silently.
    Operator notes are used up only by a prompt that is sent."""
    spec = runner.spec
    text = string.Template(spec.prompt).safe_substitute(
        iteration=n,
        max_iterations=spec.max_iterations,
        check_output=runner.check_output or "(no checks have run yet)",
        last_output=runner.last_output[-LAST_OUTPUT_LIMIT:] or "(no previous output)",
        loop=spec.name,
        workspace=str(spec.workspace),
        after_output=runner.after_output or "(no loops before this one)",
        score_history=runner.scores.history() if runner.scores else "(this loop has no score)",
    )
    if runner.control.injections:
        notes = "\n".join(f"Operator note: {t}" for t in runner.control.injections)
        text = f"{text}\n\n{notes}"
    problem = too_large(
        f"iteration {n}'s prompt (placeholders expanded, operator notes added)",
        size_of(text),
        PROMPT_MAX_BYTES,
    )
    if problem is not None:
        runner._end("failed", f"{problem}; shorten the prompt template and restart")
        return None
    runner._in_flight_notes = list(runner.control.injections)  # sent: queued again on a re-run
    runner.control.injections.clear()
    # Valid text for every agent (a prompt file, stdin, an API request): `$workspace`
    # of a directory whose name is not UTF-8, or a note injected in-process, may
    # hold lone surrogates.
    return runner.redactor.text(valid_text(text))
