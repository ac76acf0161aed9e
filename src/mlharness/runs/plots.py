"""``curves.png`` for one run and the overlay of several runs for ``mlx compare``.

matplotlib is imported here only, with the Agg backend, so plotting works without a display
and nothing else pays for the import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlharness.runs.heap import release_free_memory
from mlharness.runs.io import atomic_write_bytes

_SKIP = {"epoch", "step", "iter", "epoch_time", "elapsed", "time", "timestamp"}


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
            base = key
            for prefix in ("val_", "val/", "train/", "train_"):
                if base.startswith(prefix):
                    base = base[len(prefix) :]
                    break
            members = groups.setdefault(base, [])
            if key not in members:
                members.append(key)
    return groups


def _series(
    history: Sequence[Mapping[str, Any]], key: str, step_key: str
) -> tuple[list[Any], list[Any]]:
    """The (steps, values) of one metric, skipping records where it is missing or null."""
    xs, ys = [], []
    for i, record in enumerate(history):
        value = record.get(key)
        if isinstance(value, (int, float)):
            xs.append(record.get(step_key, i + 1))
            ys.append(value)
    return xs, ys


def _label(ax: Any, title: str, step_key: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(step_key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _figure(n_panels: int) -> tuple[Any, list[Any]]:
    import sys

    if "matplotlib" not in sys.modules:
        # At the end of a run the allocator still holds what training freed; matplotlib
        # (~30 MB) would otherwise add to the run's peak memory.
        release_free_memory()
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = min(n_panels, 3) or 1
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
        for key in keys:
            xs, ys = _series(history, key, step_key)
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=key)
        _label(ax, base, step_key)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_comparison(
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike[str],
    step_key: str = "epoch",
) -> Path | None:
    """Overlay the same metric of several runs, one panel per metric, one line per run."""
    keys: list[str] = []
    for history in histories.values():
        for members in metric_groups(history, step_key).values():
            keys.extend(k for k in members if k not in keys)
    if not keys:
        return None
    fig, axes = _figure(len(keys))
    for ax, key in zip(axes, keys, strict=False):
        for label, history in histories.items():
            xs, ys = _series(history, key, step_key)
            if xs:
                ax.plot(xs, ys, label=label)
        _label(ax, key, step_key)
    return _save(fig, path)
