"""Metrics of a run: NDJSON as they happen, then JSON, Markdown and ``curves.png``.

The NDJSON line is flushed and fsynced per record, so a run killed at any moment keeps
every epoch it finished; the whole-history files are written atomically on close.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from mlharness.runs.index import format_value
from mlharness.runs.io import atomic_write_json, atomic_write_text, dumps, to_jsonable
from mlharness.runs.plots import plot_curves


def tensorboard_tag(key: str) -> str:
    """``loss`` → ``train/loss``, ``val_loss`` → ``val/loss``; tags with a slash stay as is."""
    if "/" in key:
        return key
    if key.startswith("val_"):
        return "val/" + key[4:]
    return "train/" + key


class MetricsWriter:
    """Writes ``metrics.ndjson`` per record and ``metrics.json``/``.md``/``curves.png`` on close."""

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        experiment_name: str,
        step_key: str = "epoch",
        tensorboard_dir: str | os.PathLike[str] | None = None,
        plot: bool = True,
        plot_keys: Sequence[str] | None = None,
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
        self._tb: Any = None
        if tensorboard_dir is not None:
            from mlharness.runs.tensorboard import ScalarWriter

            self._tb = ScalarWriter(tensorboard_dir)

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
        if self._tb is not None:
            # ``clean`` holds plain Python numbers: np.float32 or np.int64 values are not
            # float/int instances, and the scalar writer would skip them.
            step = clean.get(self.step_key)
            step = int(step) if isinstance(step, (int, float)) else len(self.history)
            self._tb.add_scalars(
                {tensorboard_tag(k): v for k, v in clean.items() if k != self.step_key}, step
            )

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
        if self.history:
            keys: list[str] = []
            for record in self.history:
                keys.extend(k for k in record if k not in keys)
            rows = self.history
            if len(rows) > 100:  # keep the file readable: every k-th row and the last
                stride = -(-len(rows) // 100)
                rows = rows[::stride] + ([rows[-1]] if (len(rows) - 1) % stride else [])
            lines += [f"## History ({len(self.history)} records)", ""]
            lines += ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
            lines += ["| " + " | ".join(format_value(r.get(k)) for k in keys) + " |" for r in rows]
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
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
