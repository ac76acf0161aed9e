"""``curves.png`` for one run and the overlay of several runs for ``mlx compare``.

matplotlib is imported here only, with the Agg backend, so plotting works without a display
and nothing else pays for the import. A loss panel whose values span more than two decades
(max/min > 100, all positive) gets a log y axis, or its last epochs would be a flat line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlharness.runs.describe import series
from mlharness.runs.heap import release_free_memory
from mlharness.runs.io import atomic_write_bytes

_SKIP = {"epoch", "step", "iter", "epoch_time", "elapsed", "time", "timestamp"}
LOG_SCALE_SPAN = 100.0  # max/min of a loss above which its panel uses a log y axis


@dataclass(frozen=True)
class PanelRow:
    """One row of ``mlx compare``'s figure: the runs of one kind, one panel per metric."""

    kind: str
    step_key: str
    keys: Sequence[str]
    histories: Mapping[str, Sequence[Mapping[str, Any]]]  # run label -> its records


def base_name(key: str) -> str:
    """``val_loss``, ``train/loss`` and ``eval/train_loss`` -> ``loss``."""
    key = key.removeprefix("eval/")
    for prefix in ("val_", "val/", "train/", "train_"):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def wants_log_scale(key: str, values: Sequence[float]) -> bool:
    """A loss (or mse/mae) whose positive values span more than :data:`LOG_SCALE_SPAN`."""
    name = base_name(key)
    if not (name.endswith("loss") or name in ("mse", "rmse", "mae")):
        return False
    if not values or min(values) <= 0:
        return False
    return max(values) / min(values) > LOG_SCALE_SPAN


def metric_groups(history: Sequence[Mapping[str, Any]], step_key: str) -> dict[str, list[str]]:
    """Group metric names so a training curve and its validation twin share one panel.

    ``loss``/``val_loss`` and ``train/loss``/``val/loss`` go together; keys whose values
    are not numbers (and the step and timing keys) are left out.
    """
    groups: dict[str, list[str]] = {}
    for record in history:
        for key, value in record.items():
            if key == step_key or key in _SKIP or key.endswith("_time"):
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            base = base_name(key)
            members = groups.setdefault(base, [])
            if key not in members:
                members.append(key)
    return groups


def _label(ax: Any, title: str, step_key: str, values: Sequence[float], key: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title)
    ax.set_xlabel(step_key)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    if wants_log_scale(key, values):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _figure(n_panels: int, cols: int | None = None) -> tuple[Any, list[Any]]:
    import sys

    if "matplotlib" not in sys.modules:
        # At the end of a run the allocator still holds what training freed; matplotlib
        # (~30 MB) would otherwise add to the run's peak memory.
        release_free_memory()
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = cols or min(n_panels, 3) or 1
    rows = (n_panels + cols - 1) // cols or 1
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    return fig, flat


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def plot_curves(
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    step_key: str = "epoch",
    title: str | None = None,
) -> Path | None:
    """Draw every metric of ``history`` against ``step_key``; None when there is nothing to draw."""
    groups = metric_groups(history, step_key)
    if not groups:
        return None
    fig, axes = _figure(len(groups))
    for ax, (base, keys) in zip(axes, groups.items(), strict=False):
        values: list[float] = []
        for key in keys:
            points = series(history, key, step_key)
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=key)
                values += ys
        _label(ax, base, step_key, values, base)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_comparison(rows: Sequence[PanelRow], path: str | os.PathLike[str]) -> Path | None:
    """One row of panels per kind, one panel per metric, one line per run, x = the kind's step.

    Kinds never share a panel: their steps (epochs, iterations, GRPO steps) and metrics differ.
    """
    rows = [row for row in rows if row.keys]
    if not rows:
        return None
    cols = max(len(row.keys) for row in rows)
    fig, axes = _figure(len(rows) * cols, cols=cols)
    for r, row in enumerate(rows):
        for c in range(cols):
            ax = axes[r * cols + c]
            if c >= len(row.keys):
                ax.set_visible(False)
                continue
            _comparison_panel(ax, row, row.keys[c])
    return _save(fig, path)


def _comparison_panel(ax: Any, row: PanelRow, key: str) -> None:
    values: list[float] = []
    for label, history in row.histories.items():
        points = series(history, key, row.step_key)
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=label)
            values += ys
    _label(ax, f"{row.kind}: {key}", row.step_key, values, key)
