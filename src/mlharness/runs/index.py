"""``<output_dir>/index.json``: the history of every run, safe under concurrent writers.

Several processes may start runs at once; each update takes an exclusive file lock, reads
the index, changes it and writes it back atomically, so no entry is lost and readers never
see a half-written file. A temporary index a killed writer left is removed under the lock.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlharness.errors import RunDirectoryError
from mlharness.runs.io import atomic_write_json, atomic_write_text, clean_leftovers

INDEX_NAME = "index.json"


@contextmanager
def _locked(index_path: Path) -> Iterator[None]:
    from filelock import FileLock, Timeout

    lock = FileLock(str(index_path) + ".lock")
    try:
        with lock.acquire(timeout=60):
            yield
    except Timeout as exc:
        raise RunDirectoryError(
            f"Timed out waiting for the lock on {index_path}. If no other mlx process is "
            f"running, delete {index_path}.lock and try again."
        ) from exc


def _read(index_path: Path) -> dict[str, Any]:
    if not index_path.exists():
        return {"runs": []}
    try:
        data = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RunDirectoryError(
            f"The run index {index_path} is unreadable ({exc}). Move it aside; runs are "
            "untouched and new ones will start a fresh index."
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise RunDirectoryError(f"The run index {index_path} has no 'runs' list. Move it aside.")
    return data


def update_index(index_path: Path, change: Callable[[list[dict[str, Any]]], None]) -> None:
    """Apply ``change`` to the list of runs under the lock and write the index atomically."""
    index_path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(index_path):
        clean_leftovers(index_path.parent, name=index_path.name)  # no other writer: we lock
        data = _read(index_path)
        change(data["runs"])
        atomic_write_json(index_path, data)


def add_run(index_path: Path, entry: dict[str, Any]) -> None:
    """Append one run's entry (experiment, timestamp, run_dir, created_at, ...)."""
    update_index(index_path, lambda runs: runs.append(entry))


def update_run(index_path: Path, run_dir: str, **fields: Any) -> None:
    """Update the entry whose ``run_dir`` matches (e.g. its status and final metrics)."""

    def change(runs: list[dict[str, Any]]) -> None:
        for entry in runs:
            if entry.get("run_dir") == run_dir:
                entry.update(fields)

    update_index(index_path, change)


def list_all_runs(index_path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every run recorded in ``index_path``, oldest first; an empty list when there is none."""
    path = Path(index_path)
    if path.is_dir():
        path = path / INDEX_NAME
    return list(_read(path)["runs"])


def get_runs_by_experiment(
    index_path: str | os.PathLike[str], experiment: str
) -> list[dict[str, Any]]:
    """The runs of one experiment, oldest first."""
    return [r for r in list_all_runs(index_path) if r.get("experiment") == experiment]


def generate_markdown_summary(
    runs: list[dict[str, Any]], output_path: str | os.PathLike[str] | None = None
) -> str:
    """A Markdown table of ``runs``; also written to ``output_path`` when given."""
    metric_names: list[str] = []
    for run in runs:
        for key in run.get("final_metrics") or {}:
            if key not in metric_names and key != "epoch":
                metric_names.append(key)
    shown = metric_names[:6]
    header = ["Experiment", "Timestamp", "Kind", "Status", *shown, "Run directory"]
    lines = [
        "# Run history",
        "",
        f"{len(runs)} run(s).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for run in runs:
        finals = run.get("final_metrics") or {}
        cells = [
            str(run.get("experiment", "")),
            str(run.get("timestamp", "")),
            str(run.get("kind", "")),
            str(run.get("status", "")),
            *(format_value(finals.get(m)) for m in shown),
            f"`{run.get('run_dir', '')}`",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if output_path is not None:
        atomic_write_text(output_path, text)
    return text


def format_value(value: Any) -> str:
    """Numbers to 6 significant digits, missing values as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
