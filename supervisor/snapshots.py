"""What a front-end sees of one loop at one instant (`api.LoopSnapshot`), from its runner.

Kept apart from `runtime` (which assembles the whole `RunSnapshot`): the fields a
UI shows change with the UI, the run's machinery does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from supervisor.api import LoopSnapshot

if TYPE_CHECKING:
    from supervisor.loop import LoopRunner


def loop_snapshot(runner: LoopRunner, tail: int) -> LoopSnapshot:
    """`runner`'s loop now, with the last `tail` transcript lines (0: none)."""
    stats = runner.ledger.statistics()
    agent_spec = runner.agent_spec
    return LoopSnapshot(
        name=runner.spec.name,
        agent=runner.spec.agent,
        agent_kind=agent_spec.kind,
        state=runner.state,
        reason=runner.reason,
        iteration=runner.iteration,
        max_iterations=runner.spec.max_iterations,
        tokens=stats.tokens_spent,
        usd=stats.usd_spent,
        cpu_s=stats.cpu_spent,
        limits=runner.spec.budget.limits,
        retries_used=runner.retries_used,
        retries=runner.spec.budget.retries,
        started_at=runner.started_at,
        elapsed_s=runner.elapsed_s,
        last_check=runner.last_check,
        last_check_passed=runner.last_check_passed,
        attention=runner.needs_attention,
        evidence=runner.evidence,
        session_id=runner.agent.session_id,
        prompt=runner.spec.prompt,
        wait_seconds=runner.wait_seconds,
        next_run=runner.next_run,
        transcript_tail=runner.tail.snapshot()[-tail:] if tail > 0 else (),
        transcript_streaming=tail > 0 and runner.tail.streaming,
        forked_from=runner.forked_from,
        attempt_of=runner.spec.attempt_of or "",
        **(runner.scores.snapshot_fields() if runner.scores is not None else {}),
    )
