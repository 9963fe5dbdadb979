"""`on_exhausted = "pause"`: a spent budget as a pause a person ends by raising it.

The loop (`loop.LoopRunner`) asks `pauses(ledger, reason)` wherever a budget would
end it; when the ledger that ran out says pause, the loop shows `paused` with cause
"budget" and `paused_reason` (what ran out, with the numbers) and waits. Raising the
limit (`ctl edit LOOP --tokens/--usd`, `ctl budget` for the global one, the console's
edit screen) resumes it where it stopped: the iteration a crossing cut off runs
again, a finished one is followed by the next. A headless run that nobody can raise
ends as before: exit 4 for a loop's budget (a loop waits for a person), exit 2 for
the global one.
"""

from __future__ import annotations

from supervisor.budget import Ledger


def ledger_of(ledger: Ledger, reason: str) -> Ledger:
    """The ledger a budget reason names: the run's root for "global ...", else the loop's."""
    if reason.startswith("global"):
        return ledger.chain()[-1]
    return ledger


def pauses(ledger: Ledger, reason: str) -> bool:
    """Whether running out as `reason` says pauses the loop instead of ending it."""
    return ledger_of(ledger, reason).pause_when_exhausted


def paused_reason(ledger: Ledger, reason: str) -> str:
    """ "budget: loop 'a' tokens budget used up (12,345 of 10,000 tokens; $0.41 of
    $0.50); raise it to go on"."""
    node = ledger_of(ledger, reason)
    lim = node.limits
    numbers = [f"{node.tokens_spent:,}" + (f" of {lim.tokens:,}" if lim.tokens else "") + " tokens"]
    numbers.append(f"${node.usd_spent:.4f}" + (f" of ${lim.usd:.2f}" if lim.usd else ""))
    if lim.cpu is not None:
        numbers.append(f"{node.cpu_spent:.0f}s of {lim.cpu:.0f}s CPU")
    return f"budget: {reason} ({'; '.join(numbers)}); raise it to go on"


def still_short(ledger: Ledger) -> bool:
    """Whether a ledger of the chain is still spent after a raise."""
    return ledger.crossed() is not None
