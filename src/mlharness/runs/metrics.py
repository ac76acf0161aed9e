"""Metrics of a run: NDJSON as they happen, then JSON, Markdown and ``curves.png``.

The NDJSON line is flushed and fsynced per record, so a run killed at any moment keeps
every epoch it finished; the whole-history files are written atomically on close.

``metrics.md`` gives each shape of record its own section (an lm or GRPO run logs training
steps and evaluations with different keys): every evaluation is shown, a long training log is
thinned to about 100 rows with a line that says so, and a table wider than 8 columns is split
into several, each led by the step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from mlharness.runs.index import format_value
from mlharness.runs.io import atomic_write_json, atomic_write_text, dumps, to_jsonable
from mlharness.runs.plots import plot_curves
from mlharness.runs.tables import column_groups, table
from mlharness.runs.trackers import TensorBoardTracker, Tracker, call_each, scalars
from mlharness.runs.trackers import tensorboard_tag as tensorboard_tag

MAX_ROWS = 100  # training-log rows in metrics.md; the full history is in metrics.json
MAX_EVAL_ROWS = 1000  # evaluation rows: all of them in any run people read


class MetricsWriter:
    """Writes ``metrics.ndjson`` per record and ``metrics.json``/``.md``/``curves.png`` on close.

    Each record also goes to ``trackers`` (:mod:`mlharness.runs.trackers`), which the run
    lifecycle opens and ends; ``tensorboard_dir`` is a TensorBoard tracker of the writer's
    own, closed with it.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        experiment_name: str,
        step_key: str = "epoch",
        tensorboard_dir: str | os.PathLike[str] | None = None,
        plot: bool = True,
        plot_keys: Sequence[str] | None = None,
        trackers: Sequence[Tracker] = (),
    ) -> None:
        self.output_dir = Path(output_dir)
        self.experiment_name = experiment_name
        self.step_key = step_key
        self.plot = plot
        self.plot_keys = plot_keys  # None: every metric gets a panel
        self.history: list[dict[str, Any]] = []
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._ndjson: IO[str] | None = open(  # noqa: SIM115 - kept open for streaming
            self.output_dir / "metrics.ndjson", "a", encoding="utf-8"
        )
        self.trackers = list(trackers)
        self._own: Tracker | None = None
        if tensorboard_dir is not None:
            self._own = TensorBoardTracker(Path(tensorboard_dir))
            self.trackers.append(self._own)

    def log(self, record: Mapping[str, Any], *, sync: bool = True) -> None:
        """Record one epoch's (or step's) metrics; NaN/Inf are stored as null.

        The line always reaches the kernel, so a killed process loses nothing; ``sync``
        also fsyncs it against power loss, which per-step records of a fast loop skip.
        """
        clean = to_jsonable(dict(record))
        self.history.append(clean)
        if self._ndjson is not None:
            self._ndjson.write(dumps(clean, indent=None) + "\n")
            self._ndjson.flush()
            if sync:
                os.fsync(self._ndjson.fileno())
        if self.trackers:
            # ``clean`` holds plain Python numbers: np.float32 or np.int64 values are not
            # float/int instances, and would not count as scalars.
            step = clean.get(self.step_key)
            step = int(step) if isinstance(step, (int, float)) else len(self.history)
            values = scalars(clean, skip=self.step_key)
            call_each(self.trackers, "log", values, step, self.step_key)

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]], step: int) -> None:
        """A table of rows (GRPO's completions) for the trackers that show tables."""
        call_each(self.trackers, "log_table", name, to_jsonable(list(rows)), step, self.step_key)

    def write_metrics(self, final_metrics: Mapping[str, Any] | None = None) -> Path:
        """Write ``metrics.json`` (the full history) and ``metrics.md``; return the JSON path."""
        final = dict(final_metrics) if final_metrics is not None else self.final_metrics()
        path = self.output_dir / "metrics.json"
        atomic_write_json(
            path,
            {"experiment": self.experiment_name, "final_metrics": final, "metrics": self.history},
        )
        atomic_write_text(self.output_dir / "metrics.md", self.markdown(final))
        return path

    def final_metrics(self) -> dict[str, Any]:
        return dict(self.history[-1]) if self.history else {}

    def markdown(self, final: Mapping[str, Any]) -> str:
        lines = [f"# Metrics: {self.experiment_name}", ""]
        if final:
            lines += ["## Final metrics", "", "| Metric | Value |", "|---|---|"]
            lines += [f"| {k} | {format_value(v)} |" for k, v in final.items()]
            lines.append("")
        lines += history_sections(self.history, self.step_key)
        return "\n".join(lines) + "\n"

    def close(self, final_metrics: Mapping[str, Any] | None = None) -> None:
        """Write the whole-history files and the curves; safe to call more than once."""
        if self._ndjson is None:
            return
        self._ndjson.close()
        self._ndjson = None
        self.write_metrics(final_metrics)
        if self.plot and self.history:
            history = self.history
            if self.plot_keys is not None:
                wanted = {self.step_key, *self.plot_keys}
                history = [{k: v for k, v in r.items() if k in wanted} for r in history]
            plot_curves(
                history, self.output_dir / "curves.png", self.step_key, self.experiment_name
            )
        if self._own is not None:
            call_each([self._own], "finish", "completed")

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def record_shapes(
    history: Sequence[Mapping[str, Any]], step_key: str
) -> list[tuple[list[str], list[Mapping[str, Any]]]]:
    """Split ``history`` into runs of records of one shape: (keys, records) in order.

    A record joins the first shape whose keys hold all of its keys or are all among its
    keys (an epoch that adds ``val_loss`` stays in the table of the epochs); records whose
    keys overlap only partly (an lm run's training steps and evaluations) go apart.
    """
    shapes: list[tuple[list[str], list[Mapping[str, Any]]]] = []
    for record in history:
        keys = [k for k in record if k != step_key]
        for shape_keys, records in shapes:
            if set(keys) <= set(shape_keys) or set(shape_keys) <= set(keys):
                shape_keys.extend(k for k in keys if k not in shape_keys)
                records.append(record)
                break
        else:
            shapes.append((keys, [record]))
    if any(step_key in r for r in history):
        for shape_keys, _ in shapes:
            shape_keys.insert(0, step_key)
    return shapes


def _is_evaluation(keys: Sequence[str]) -> bool:
    return any(k.startswith(("val_", "val/")) for k in keys)


def _thin(
    rows: Sequence[Mapping[str, Any]], limit: int
) -> tuple[Sequence[Mapping[str, Any]], str | None]:
    """Every k-th row and the last when there are more than ``limit``, and a line saying so."""
    if len(rows) <= limit:
        return rows, None
    stride = -(-len(rows) // limit)
    kept = list(rows[::stride]) + ([rows[-1]] if (len(rows) - 1) % stride else [])
    note = (
        f"{len(kept)} of {len(rows)} records shown: one in every {stride}, and the last. "
        "The full history is in metrics.json and metrics.ndjson beside this file."
    )
    return kept, note


def _section(
    title: str, keys: list[str], rows: Sequence[Mapping[str, Any]], step_key: str, limit: int
) -> list[str]:
    shown, note = _thin(rows, limit)
    lines = [f"## {title} ({len(rows)} records)", ""]
    if note:
        lines += [note, ""]
    for columns in column_groups(keys, step_key):
        lines += table(columns, [[format_value(r.get(k)) for k in columns] for r in shown])
        lines.append("")
    return lines


def history_sections(history: Sequence[Mapping[str, Any]], step_key: str) -> list[str]:
    """The History part of metrics.md: one section per shape of record, evaluations first."""
    shapes = record_shapes(history, step_key)
    if len(shapes) == 1:
        keys, rows = shapes[0]
        return _section("History", keys, rows, step_key, MAX_ROWS)[:-1]
    lines: list[str] = []
    ordered = sorted(shapes, key=lambda shape: not _is_evaluation(shape[0]))
    for keys, rows in ordered:
        if _is_evaluation(keys):
            lines += _section("Evaluations", keys, rows, step_key, MAX_EVAL_ROWS)
        else:
            lines += _section("Training log", keys, rows, step_key, MAX_ROWS)
    return lines[:-1]
