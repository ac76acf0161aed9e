"""Tabular runs resume where they stopped, at the last completed epoch, exactly.

After every completed epoch a resumable :class:`~mlharness.tabular.loop.TrainingLoop`
replaces ``checkpoints/resume/`` atomically (a kill leaves the old state or the new one):

    resume/model/        the model and its optimizer state, as any checkpoint (model.json, ...)
    resume/trainer.json  {"format_version": 1, "epoch": N, "rng": <the shuffling generator's
                          state>, "data": <sha256 of the split>, "checkpoints": [...],
                          "train_seconds": ...}

The rest is rebuilt: the split and the standardisation from the seeds, the metrics history
from ``metrics.ndjson`` cut back to epoch N. The directory is removed when the run completes:
a completed run is never resumed.

:func:`find` picks the run to resume: the newest unfinished run of the experiment whose
process is gone (:func:`mlharness.runs.recovery.recover` settles the others) that has a resume
state, recorded the same resolved config, trains on the same data and kept its history.
Runs that fail one of these are passed over, and the reason is said.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlharness.config import flatten
from mlharness.runs.io import atomic_directory, atomic_write_json, dumps, remove_directory

if TYPE_CHECKING:
    from mlharness.tabular.base import BaseModel

RESUME_DIR = "resume"
STATE_FILE = "trainer.json"
MODEL_DIR = "model"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ResumePoint:
    """A run's resume state: the run, the epoch it completed last, and ``trainer.json``."""

    run_dir: Path
    epoch: int
    state: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.run_dir / "checkpoints" / RESUME_DIR

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_DIR


def write_state(checkpoint_dir: Path, model: BaseModel, state: Mapping[str, Any]) -> None:
    """Replace ``checkpoint_dir/resume`` with the model and ``state`` (epoch, RNG, ...)."""
    with atomic_directory(checkpoint_dir / RESUME_DIR) as tmp:
        model.save(tmp / MODEL_DIR)
        atomic_write_json(tmp / STATE_FILE, {"format_version": FORMAT_VERSION, **state})


def discard(checkpoint_dir: Path) -> None:
    """Remove the resume state of a run that completed (nothing happens if there is none)."""
    remove_directory(checkpoint_dir / RESUME_DIR)


def read_point(run_dir: Path) -> ResumePoint | None:
    """The run's resume state, or None when it has none this version can read."""
    try:
        state = json.loads((run_dir / "checkpoints" / RESUME_DIR / STATE_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        return None
    epoch = state.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        return None
    return ResumePoint(run_dir, epoch, state)


def fingerprint(*arrays: np.ndarray) -> str:
    """sha256 of the arrays' dtypes, shapes and values: a resumed run must see the same data."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape};".encode())
        if array.dtype.kind == "O":
            digest.update(repr(array.tolist()).encode())
        else:
            digest.update(array.tobytes())
    return digest.hexdigest()


def find(
    output_dir: Path,
    experiment: str,
    config: Mapping[str, Any],
    data: Callable[[], str],
    *,
    fresh: bool = False,
) -> ResumePoint | None:
    """The resume state of the run to continue, or None to start a new run.

    ``config`` is the resolved config (as ``config.json`` records it, without ``_run``);
    ``data()`` the fingerprint of the split this config trains on, computed only when a run
    is a candidate. Dead runs are settled first, ``fresh`` or not.
    """
    from mlharness.runs import recovery

    wanted = json.loads(dumps(config))
    split = functools.cache(data)

    def mismatch(run_dir: Path, point: ResumePoint) -> str | None:
        return why_not(run_dir, point, wanted, split)

    found = recovery.recover(
        output_dir, experiment, "tabular", read_point, resume=not fresh, mismatch=mismatch
    )
    return None if found is None else found[1]


def why_not(
    run_dir: Path, point: ResumePoint, wanted: Mapping[str, Any], data: Callable[[], str]
) -> str | None:
    """Why the run cannot continue as this config's run, or None when it can."""
    try:
        recorded = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = None
    if not isinstance(recorded, dict):
        return "its config.json cannot be read"
    recorded.pop("_run", None)
    changes = config_changes(recorded, wanted)
    if changes:
        shown = "; ".join(changes[:3]) + ("; ..." if len(changes) > 3 else "")
        return f"its config differs from this one ({shown})"
    if point.state.get("data") != data():
        return "its data differ from what this config loads now (the dataset changed)"
    if logged_epochs(run_dir / "metrics", point.epoch) != list(range(1, point.epoch + 1)):
        return f"its metrics.ndjson lacks some of epochs 1 to {point.epoch}"
    return None


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``["training.epochs: 4 -> 6", ...]``: the dotted keys whose values differ."""
    before, after = flatten(old), flatten(new)
    unset = object()
    changes = []
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key, unset), after.get(key, unset)
        if a != b:
            show = [("(unset)" if v is unset else json.dumps(v)) for v in (a, b)]
            changes.append(f"{key}: {show[0]} -> {show[1]}")
    return changes


def logged_epochs(metrics_dir: Path, upto: int) -> list[int]:
    """The epochs up to ``upto`` that ``metrics.ndjson`` holds a whole record of, in order."""
    path = metrics_dir / "metrics.ndjson"
    epochs = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        epoch = record.get("epoch") if isinstance(record, dict) else None
        if isinstance(epoch, int) and epoch <= upto:
            epochs.append(epoch)
    return epochs
