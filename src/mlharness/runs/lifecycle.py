"""The life of a run, the same for every engine: found again, resumed, ended.

Engines call these instead of each writing its own: which unfinished run to resume (and
whether its process is alive, see :mod:`mlharness.runs.recovery`), the metric records a
resumed run keeps, and the random state a checkpoint carries so a resumed run repeats
exactly. torch is imported only by the functions that touch its RNG.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlharness.runs import recovery
from mlharness.runs.checkpoints import CheckpointInfo, newest_checkpoint
from mlharness.runs.io import atomic_write_text, dumps


def find_resumable(
    output_dir: Path, experiment: str, kind: str, *, fresh: bool = False
) -> tuple[Path, CheckpointInfo] | None:
    """The latest unfinished run of ``experiment`` and its newest checkpoint, if any.

    A run whose process is still alive is not taken over: that is an error the user
    resolves (wait, stop it, or ``--fresh``). Dead runs are settled first, ``fresh`` or
    not: see :func:`mlharness.runs.recovery.recover`.
    """
    return recovery.recover(output_dir, experiment, kind, newest_checkpoint, resume=not fresh)


def keep_history(metrics_dir: Path, upto: int, key: str = "iter") -> list[dict[str, Any]]:
    """On resume: the records the checkpoint covers (``key`` <= upto); later ones are redone."""
    path = metrics_dir / "metrics.ndjson"
    kept: list[dict[str, Any]] = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by the kill
            if isinstance(record, dict) and record.get(key, 0) <= upto:
                kept.append(record)
    atomic_write_text(path, "".join(dumps(r, indent=None) + "\n" for r in kept))
    return kept


def rng_state() -> dict[str, Any]:
    """torch's global RNG (and every CUDA device's), for a checkpoint's trainer state."""
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
