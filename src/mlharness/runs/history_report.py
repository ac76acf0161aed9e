"""``mlx history``: the runs of an index as one table per kind, with that kind's columns.

Each kind logs different metrics against a different step (epochs, iterations, GRPO steps),
so one shared set of columns would leave most cells empty. A kind's table shows its step, the
final value of each headline metric (and the best of the first) read from the run's metrics
history, or from the index where the run directory is gone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlharness.runs.describe import RunMetrics, best_and_final, last_step
from mlharness.runs.index import format_value
from mlharness.runs.rundata import read_history, run_kind
from mlharness.runs.tables import table

Run = Mapping[str, Any]  # one entry of index.json


def _kind_of(run: Run, base_dir: Path) -> str:
    kind = run_kind(base_dir / str(run.get("run_dir", "")))
    return kind or str(run.get("kind") or "unknown")


def _metric_cells(run: Run, history: list[dict[str, Any]], m: RunMetrics) -> dict[str, str]:
    """Column name -> cell: the step, each headline metric's final value, the primary's best."""
    finals = run.get("final_metrics") or {}
    step = last_step(history, m.step_key)
    cells = {m.step_key: format_value(finals.get(m.step_key) if step is None else step)}
    for metric in m.headline:
        best, final = best_and_final(history, metric, m.step_key)
        cells[metric.key] = format_value(finals.get(metric.key) if final is None else final[1])
        if metric is m.primary:
            cells[f"best {metric.key}"] = "" if best is None else format_value(best[1])
    return cells


def _kind_table(runs: Sequence[Run], base_dir: Path, m: RunMetrics | None) -> list[str]:
    rows = []
    for run in runs:
        history = read_history(base_dir / str(run.get("run_dir", "")))
        metrics = _metric_cells(run, history, m) if m is not None else {}
        rows.append((run, metrics))
    names = list(rows[0][1])
    shown = [n for n in names if any(cells[n] for _, cells in rows)]
    header = ["Experiment", "Status", *shown, "Run directory"]
    body = [
        [
            str(run.get("experiment", "")),
            str(run.get("status", "")),
            *(cells[n] for n in shown),
            f"`{run.get('run_dir', '')}`",
        ]
        for run, cells in rows
    ]
    return table(header, body)


def history_markdown(
    runs: Sequence[Run], base_dir: Path, described: Mapping[str, RunMetrics]
) -> str:
    """The Markdown of ``mlx history``: a count, then one section and table per kind."""
    by_kind: dict[str, list[Run]] = {}
    for run in runs:
        by_kind.setdefault(_kind_of(run, base_dir), []).append(run)
    lines = ["# Run history", "", f"{len(runs)} run(s).", ""]
    for kind, members in by_kind.items():
        m = described.get(kind)
        where = f"step: {m.step_key}" if m else "a kind mlx does not know: no metric columns"
        lines += [f"## {kind} ({len(members)} run(s), {where})", ""]
        lines += [*_kind_table(members, base_dir, m), ""]
    return "\n".join(lines[:-1]) + "\n"
