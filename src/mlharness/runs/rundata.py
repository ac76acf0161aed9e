"""Read a finished (or unfinished) run directory: its kind, config, status and metrics history.

The kind of a run is the one its ``config.json`` recorded (``_run.kind``, else ``kind``):
a run directory says what it is, whatever the index or the user's current config claim.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlharness.errors import RunDirectoryError


@dataclass(frozen=True)
class RunData:
    """What ``mlx compare`` needs of one run."""

    path: Path
    label: str
    kind: str
    status: str
    config: dict[str, Any]  # the resolved config, without the "_run" provenance
    history: list[dict[str, Any]]
    final: dict[str, Any]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def config_kind(config: Any) -> str | None:
    """The kind a ``config.json`` records, or None."""
    if not isinstance(config, dict):
        return None
    run = config.get("_run")
    kind = run.get("kind") if isinstance(run, dict) else None
    kind = kind or config.get("kind")
    return kind if isinstance(kind, str) else None


def run_kind(run_dir: Path) -> str | None:
    """The kind recorded in ``run_dir/config.json``; None when there is none to read."""
    return config_kind(_read_json(run_dir / "config.json"))


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The metrics records: ``metrics.json`` of a closed run, else the ``metrics.ndjson`` a
    running (or killed) run has flushed so far; empty when there is neither."""
    data = _read_json(run_dir / "metrics" / "metrics.json")
    if isinstance(data, dict) and isinstance(data.get("metrics"), list):
        return [r for r in data["metrics"] if isinstance(r, dict)]
    try:
        lines = (run_dir / "metrics" / "metrics.ndjson").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if isinstance(record, dict):
            records.append(record)
    return records


def load_run(run_dir: Path, label: str) -> RunData:
    """Everything ``mlx compare`` shows of ``run_dir``; a user error if it is not a run."""
    metrics_file = run_dir / "metrics" / "metrics.json"
    if not run_dir.is_dir():
        raise RunDirectoryError(f"Run directory not found: {run_dir}")
    if not metrics_file.is_file():
        raise RunDirectoryError(
            f"{run_dir} has no metrics/metrics.json: is it a run directory of a finished "
            "or interrupted run?"
        )
    config = _read_json(run_dir / "config.json")
    kind = config_kind(config)
    if kind is None:
        raise RunDirectoryError(
            f"{run_dir} has no readable config.json saying which kind of run it is; "
            "compare needs it to know the run's step and metrics."
        )
    data = _read_json(metrics_file)
    if not isinstance(data, dict):
        raise RunDirectoryError(f"{metrics_file} is not a metrics file of mlx (unreadable JSON).")
    summary = _read_json(run_dir / "summary.json")
    status = summary.get("status") if isinstance(summary, dict) else None
    return RunData(
        path=run_dir,
        label=label,
        kind=kind,
        status=str(status or "unknown"),
        config={k: v for k, v in config.items() if k != "_run"},
        history=read_history(run_dir),
        final=dict(data.get("final_metrics") or {}),
    )
