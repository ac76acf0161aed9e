"""What a kind's metrics mean: the step they are logged against and the ones worth a column.

Each engine declares one :class:`RunMetrics` next to its config schema (``TABULAR_METRICS``
in ``tabular/config.py``, ``LM_METRICS`` in ``lm/config.py``, ``RL_METRICS`` in
``rl/config.py``). ``runs/`` never imports an engine: the CLI looks the description up by the
run's kind (from its ``config.json``) and passes it in.

>>> m = RunMetrics("lm", "iter", (Headline("val_loss", "min"),))
>>> history = [{"iter": 10, "val_loss": 3.0}, {"iter": 20, "val_loss": 2.5}, {"iter": 30}]
>>> best_and_final(history, m.headline[0], m.step_key)
((20, 2.5), (20, 2.5))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Point = tuple[Any, float]  # (step, value)


@dataclass(frozen=True)
class Headline:
    """One metric worth a column: its key in the history records and which way is better."""

    key: str
    goal: Literal["min", "max"]

    def better(self, a: float, b: float) -> bool:
        """Whether value ``a`` beats value ``b``."""
        return a < b if self.goal == "min" else a > b


@dataclass(frozen=True)
class RunMetrics:
    """A kind's metrics: the step key of its records and its headline metrics, primary first.

    Headline keys a run never logged (``val_accuracy`` of a regressor) are left out where
    that run is shown.
    """

    kind: str
    step_key: str
    headline: tuple[Headline, ...]

    @property
    def primary(self) -> Headline:
        return self.headline[0]


def series(history: Sequence[Mapping[str, Any]], key: str, step_key: str) -> list[Point]:
    """The (step, value) points of one metric; records without a number for it are skipped.

    A record without the step key stands at its position in the history (from 1).
    """
    points: list[Point] = []
    for i, record in enumerate(history):
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            points.append((record.get(step_key, i + 1), float(value)))
    return points


def best_and_final(
    history: Sequence[Mapping[str, Any]], metric: Headline, step_key: str
) -> tuple[Point | None, Point | None]:
    """The best point of ``metric`` (the first one, on ties) and its last point."""
    points = series(history, metric.key, step_key)
    if not points:
        return None, None
    best = points[0]
    for point in points[1:]:
        if metric.better(point[1], best[1]):
            best = point
    return best, points[-1]


def last_step(history: Sequence[Mapping[str, Any]], step_key: str) -> Any:
    """The step of the last record that has one; None for an empty history."""
    for record in reversed(history):
        if step_key in record:
            return record[step_key]
    return None
