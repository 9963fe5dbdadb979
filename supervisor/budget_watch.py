"""Budget warnings: one event per ledger, dimension and threshold crossed.

A person watching 50 loops wants to hear once that the global USD budget is 80%
spent, not on every usage delta; and a CLI agent's overshoot must be visible.
"""

from __future__ import annotations

from collections.abc import Callable

from supervisor.budget import Ledger
from supervisor.events import BudgetWarning

THRESHOLDS = (0.8, 0.95)


class BudgetWatch:
    def __init__(self, publish: Callable[[BudgetWarning], None]) -> None:
        self._publish = publish
        self._seen: set[tuple[str, str, float]] = set()

    def check(self, ledger: Ledger) -> None:
        """Call after a charge on `ledger`: warns for it and every ledger above it."""
        for node in ledger.chain():
            lim = node.limits
            for dim, used, limit in (
                ("tokens", float(node.tokens_spent), lim.tokens),
                ("usd", node.usd_spent, lim.usd),
                ("cpu", node.cpu_spent, lim.cpu),
            ):
                if limit is None or limit <= 0:
                    continue
                share = used / limit
                for threshold in (*THRESHOLDS, 1.0):
                    key = (node.name, dim, threshold)
                    if share >= threshold and key not in self._seen:
                        self._seen.add(key)
                        self._publish(
                            BudgetWarning(
                                scope=node.name,
                                dimension=dim,
                                used=used,
                                limit=float(limit),
                                message=_message(node.name, dim, used, float(limit), threshold),
                            )
                        )

    def reset(self, scope: str) -> None:
        """Forget the warnings of one ledger (a scheduled loop's next run)."""
        self._seen = {k for k in self._seen if k[0] != scope}


def _message(scope: str, dim: str, used: float, limit: float, threshold: float) -> str:
    where = "global" if scope == "global" else f"loop {scope!r}"
    amount = {
        "usd": f"${used:.4f} of ${limit:.2f}",
        "tokens": f"{int(used):,} of {int(limit):,} tokens",
        "cpu": f"{used:.1f}s of {limit:.0f}s CPU",
    }[dim]
    if used > limit:
        return f"{where} {dim} budget overshot: {amount} (a CLI agent's last message)"
    if threshold >= 1.0:
        return f"{where} {dim} budget used up: {amount}"
    return f"{where} {dim} budget {threshold:.0%} spent: {amount}"
