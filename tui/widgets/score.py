"""ScoreLine: a metric loop's scores as a sparkline and its best so far, in one line.

Shown under the focused loop's title only for a loop with a score (`score = {...}` on
a check): the label says the last and best score and which iteration holds the best;
the sparkline draws every judged iteration (an iteration without a score is drawn at
the bottom, as the worst). Hidden for other loops, so their screen is unchanged.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Sparkline

from supervisor.api import LoopSnapshot
from tui.widgets.status import StatusLine


def score_label(loop: LoopSnapshot) -> str:
    """ "score 0.62 · best 0.7 (iter 2)": what the sparkline cannot say."""
    last = loop.scores[-1] if loop.scores else None
    parts = [f"score {_show(last)}"]
    if loop.best_score is not None:
        parts.append(f"best {_show(loop.best_score)} (iter {loop.best_iteration})")
    return " · ".join(parts)


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def spark_data(scores: tuple[float | None, ...]) -> list[float]:
    """The sparkline's values: a missing score drawn as the lowest one seen."""
    known = [s for s in scores if s is not None]
    floor = min(known) if known else 0.0
    return [floor if s is None else s for s in scores]


class ScoreLine(Horizontal):
    DEFAULT_CSS = """
    ScoreLine {
        height: 1;
        display: none;
    }
    ScoreLine.shown {
        display: block;
    }
    ScoreLine #score-label {
        width: auto;
        max-width: 50%;
        padding: 0 1;
    }
    ScoreLine Sparkline {
        width: 1fr;
        height: 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._label = StatusLine(id="score-label")
        self._spark: Sparkline = Sparkline([], id="score-spark")

    def compose(self) -> ComposeResult:
        yield self._label
        yield self._spark

    def show_loop(self, loop: LoopSnapshot | None) -> None:
        """Show `loop`'s scores; hide the line when it is no metric loop."""
        scored = loop is not None and bool(loop.scores)
        self.set_class(scored, "shown")
        if loop is None or not scored:
            return
        label = self._label  # held, not queried: see MainScreen.on_mount
        text = score_label(loop)
        label.styles.width = len(text) + 2
        label.set_text(text)
        spark = self._spark
        data = spark_data(loop.scores)
        if list(spark.data or []) != data:
            spark.data = data
