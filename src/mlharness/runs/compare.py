"""``mlx compare``: runs side by side, grouped by kind.

Runs of one kind share a table and a row of panels, their curves drawn against the kind's
step (so runs that evaluated at different intervals line up). Runs of different kinds never
share a panel or a metric row: their steps and metrics mean different things. For each kind
the table shows status, the step reached, the best and final value of each headline metric,
and only the config values that differ between its runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mlharness.config import flatten
from mlharness.errors import RunDirectoryError
from mlharness.runs.describe import Headline, Point, RunMetrics, best_and_final, last_step
from mlharness.runs.index import format_value
from mlharness.runs.plots import PanelRow
from mlharness.runs.rundata import RunData
from mlharness.runs.tables import table

UNSET = "(unset)"
MAX_VALUE_CHARS = 60  # a config value longer than this is cut with an ellipsis


def group_by_kind(
    runs: Sequence[RunData], described: Mapping[str, RunMetrics]
) -> dict[str, list[RunData]]:
    """The runs of each kind, kinds in the order they first appear; unknown kinds refused."""
    groups: dict[str, list[RunData]] = {}
    for run in runs:
        if run.kind not in described:
            raise RunDirectoryError(
                f"{run.path} is a run of kind '{run.kind}', which mlx does not know "
                f"(known: {', '.join(described)})."
            )
        groups.setdefault(run.kind, []).append(run)
    return groups


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def config_diff(runs: Sequence[RunData]) -> list[list[str]]:
    """Rows of (dotted key, each run's value) for the config values that are not all equal."""
    flats = [flatten(run.config) for run in runs]
    keys: list[str] = []
    for flat in flats:
        keys.extend(k for k in flat if k not in keys)
    missing = object()
    rows = []
    for key in keys:
        values = [flat.get(key, missing) for flat in flats]
        if any(v != values[0] for v in values[1:]):
            rows.append([key, *(UNSET if v is missing else _show(v) for v in values)])
    return rows


def _best_row(metric: Headline, points: Sequence[Point | None], step_key: str) -> list[str]:
    values = [p[1] for p in points if p is not None]
    winner = None
    if len(values) > 1:
        winner = values[0]
        for value in values[1:]:
            if metric.better(value, winner):
                winner = value
    cells = []
    for point in points:
        if point is None:
            cells.append("")
            continue
        text = format_value(point[1])
        text = f"**{text}**" if point[1] == winner else text
        cells.append(f"{text} ({step_key} {point[0]})")
    return [f"{metric.key} best ({metric.goal})", *cells]


def metric_rows(runs: Sequence[RunData], m: RunMetrics) -> list[list[str]]:
    """Status, the step reached, then the best and final of each headline metric any run has."""
    rows = [
        ["status", *(run.status for run in runs)],
        [m.step_key, *(format_value(last_step(run.history, m.step_key)) for run in runs)],
    ]
    for metric in m.headline:
        pairs = [best_and_final(run.history, metric, m.step_key) for run in runs]
        if all(final is None for _, final in pairs):
            continue
        rows.append(_best_row(metric, [best for best, _ in pairs], m.step_key))
        finals = [format_value(None if final is None else final[1]) for _, final in pairs]
        rows.append([f"{metric.key} final", *finals])
    return rows


def _kind_section(runs: Sequence[RunData], m: RunMetrics) -> list[str]:
    labels = [run.label for run in runs]
    lines = [f"## {m.kind} ({len(runs)} run(s), step: {m.step_key})", ""]
    lines += [*table(["Metric", *labels], metric_rows(runs, m)), ""]
    lines += ["### Config values that differ", ""]
    if len(runs) == 1:
        lines += ["One run of this kind: there is nothing to compare its config with.", ""]
    elif diff := config_diff(runs):
        lines += [*table(["Key", *labels], diff), ""]
    else:
        lines += ["None: every config value is the same.", ""]
    return lines


def compare_markdown(
    groups: Mapping[str, Sequence[RunData]], described: Mapping[str, RunMetrics]
) -> str:
    """The Markdown of ``mlx compare``: one section per kind."""
    lines = ["# Run comparison", ""]
    if len(groups) > 1:
        counts = ", ".join(f"{kind} ({len(runs)})" for kind, runs in groups.items())
        lines += [
            f"Runs of {len(groups)} kinds: {counts}. Each kind has its own table and row of "
            "panels: their steps and metrics differ, so they are not overlaid.",
            "",
        ]
    for kind, runs in groups.items():
        lines += _kind_section(runs, described[kind])
    return "\n".join(lines[:-1]) + "\n"


def panel_rows(
    groups: Mapping[str, Sequence[RunData]], described: Mapping[str, RunMetrics]
) -> list[PanelRow]:
    """One row of panels per kind: its headline metrics that any of its runs logged."""
    rows = []
    for kind, runs in groups.items():
        m = described[kind]
        histories = {run.label: run.history for run in runs}
        keys = [
            h.key
            for h in m.headline
            if any(best_and_final(run.history, h, m.step_key)[1] is not None for run in runs)
        ]
        rows.append(PanelRow(kind, m.step_key, keys, histories))
    return rows
