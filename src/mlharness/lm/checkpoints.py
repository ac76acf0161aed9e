"""What an lm checkpoint holds beyond the shared layout of :mod:`mlharness.runs.checkpoints`.

    ckpt_last_00000250/                  or  ckpt_best_00000250_val_loss_1.8860/
      checkpoint.json    schema, iteration, best metric, model args, config snapshot
      model.safetensors  the weights (no pickle on the load path)
      ema.safetensors    EMA weights, when the run keeps them
      trainer.pt         optimizer state, every RNG, data position (torch.load weights_only)

Loading checks the schema first, so a directory that is not a complete checkpoint of this
format is an explicit error, never a silent fallback. Names, listing, rotation and the
messages for damaged files are shared with rl runs and live in ``runs``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlharness.errors import CheckpointError
from mlharness.runs import checkpoints as run_ckpt
from mlharness.runs.checkpoints import META_FILE, SCHEMA, TRAINER_FILE, WEIGHTS_FILE
from mlharness.runs.io import atomic_directory, atomic_write_json

if TYPE_CHECKING:
    import torch

EMA_FILE = "ema.safetensors"
_REQUIRED = ("schema", "kind", "iter", "model_args", "best_val_loss", "config")


def save_checkpoint(
    directory: Path,
    name: str,
    *,
    kind: str,
    iteration: int,
    model_state: dict[str, torch.Tensor],
    trainer_state: dict[str, Any],
    meta: dict[str, Any],
    ema_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write one checkpoint directory atomically and return its path."""
    target = directory / name
    with atomic_directory(target) as tmp:
        run_ckpt.save_weights(model_state, tmp / WEIGHTS_FILE)
        if ema_state is not None:
            run_ckpt.save_weights(ema_state, tmp / EMA_FILE)
        run_ckpt.save_trainer_state(trainer_state, tmp)
        atomic_write_json(
            tmp / META_FILE,
            {
                "schema": SCHEMA,
                "kind": kind,
                "iter": iteration,
                "created_at": datetime.now().isoformat(),
                "has_ema": ema_state is not None,
                **meta,
            },
        )
    return target


def read_meta(path: Path) -> dict[str, Any]:
    """Read and schema-check ``checkpoint.json``; any gap is a CheckpointError."""
    meta = run_ckpt.read_checkpoint_json(path)
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise CheckpointError(
            f"Checkpoint {path} is incomplete: {META_FILE} lacks {', '.join(missing)}; "
            f"{run_ckpt.remedy(path)}."
        )
    if meta["schema"] != SCHEMA:
        raise CheckpointError(
            f"Checkpoint {path} has schema {meta['schema']}, this version reads schema "
            f"{SCHEMA}. Use the mlharness version that wrote it."
        )
    for file in (WEIGHTS_FILE, TRAINER_FILE) + ((EMA_FILE,) if meta.get("has_ema") else ()):
        if not (path / file).is_file():
            raise run_ckpt.missing(path, file)
    return dict(meta)


def load_weights(path: Path, *, ema: bool = False) -> dict[str, torch.Tensor]:
    """The model's weights, or its EMA twin's."""
    return run_ckpt.load_weights(path, EMA_FILE if ema else WEIGHTS_FILE)
