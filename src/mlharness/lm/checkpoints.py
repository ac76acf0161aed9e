"""Checkpoints of lm runs, with seed 004's rotation policy.

A checkpoint is a directory written atomically (temp dir, fsync, rename):

    ckpt_last_00000250/                  or  ckpt_best_00000250_val_loss_1.8860/
      checkpoint.json    schema, iteration, best metric, model args, config snapshot
      model.safetensors  the weights (no pickle on the load path)
      ema.safetensors    EMA weights, when the run keeps them
      trainer.pt         optimizer state, every RNG, data position (torch.load weights_only)

``keep.last`` rotating last checkpoints and ``keep.best`` best ones are kept; 0 keeps none.
Loading checks the schema first, so a directory that is not a complete checkpoint of this
format is an explicit error, never a silent fallback.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mlharness.errors import CheckpointError
from mlharness.runs.io import atomic_directory, atomic_write_json

SCHEMA = 1
META_FILE = "checkpoint.json"
WEIGHTS_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
TRAINER_FILE = "trainer.pt"
_REQUIRED = ("schema", "kind", "iter", "model_args", "best_val_loss", "config")
_NAME = re.compile(r"^ckpt_(last|best)_(\d{8})(?:_.*)?$")


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    kind: str  # "last" or "best"
    iter: int


def metric_slug(name: str, value: float) -> str:
    """``val_loss``, 1.88604 → ``val_loss_1.8860``: safe in a directory name everywhere."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{name}_{value:.4f}")


def checkpoint_name(kind: str, iteration: int, metric: tuple[str, float] | None = None) -> str:
    name = f"ckpt_{kind}_{iteration:08d}"
    return f"{name}_{metric_slug(*metric)}" if metric else name


def list_checkpoints(directory: Path, kind: str | None = None) -> list[CheckpointInfo]:
    """Checkpoints in ``directory`` by iteration (oldest first); temp dirs are ignored."""
    found = []
    if directory.is_dir():
        for child in directory.iterdir():
            m = _NAME.match(child.name)
            if m and child.is_dir() and (kind is None or m.group(1) == kind):
                found.append(CheckpointInfo(child, m.group(1), int(m.group(2))))
    return sorted(found, key=lambda c: (c.iter, c.kind == "last", c.path.name))


def unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage (the tied lm_head): store each once.
    seen: dict[int, str] = {}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        ptr = tensor.data_ptr()
        if ptr in seen:
            continue
        seen[ptr] = key
        out[key] = tensor.detach().contiguous().cpu()
    return out


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
        save_file(unique_tensors(model_state), str(tmp / WEIGHTS_FILE))
        if ema_state is not None:
            save_file(unique_tensors(ema_state), str(tmp / EMA_FILE))
        torch.save(trainer_state, tmp / TRAINER_FILE)
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


def rotate(directory: Path, kind: str, keep: int) -> None:
    """Delete the oldest checkpoints of ``kind`` beyond ``keep`` (for best: the worst ones).

    Best checkpoints are written only on improvement, so the newest are also the best.
    """
    existing = list_checkpoints(directory, kind)
    for info in existing[: max(len(existing) - keep, 0)]:
        shutil.rmtree(info.path, ignore_errors=True)


def read_meta(path: Path) -> dict[str, Any]:
    """Read and schema-check ``checkpoint.json``; any gap is a CheckpointError."""
    meta_path = path / META_FILE
    if not path.is_dir():
        raise CheckpointError(f"Checkpoint '{path}' does not exist or is not a directory.")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"'{path}' is not a checkpoint: it has no {META_FILE}. Point at a ckpt_last_* or "
            "ckpt_best_* directory written by mlx train."
        ) from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"Cannot read {meta_path}: {exc}.") from exc
    missing = [k for k in _REQUIRED if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise CheckpointError(
            f"Checkpoint {path} is incomplete: {META_FILE} lacks {', '.join(missing)}."
        )
    if meta["schema"] != SCHEMA:
        raise CheckpointError(
            f"Checkpoint {path} has schema {meta['schema']}, this version reads schema "
            f"{SCHEMA}. Use the mlharness version that wrote it."
        )
    for file in (WEIGHTS_FILE, TRAINER_FILE) + ((EMA_FILE,) if meta.get("has_ema") else ()):
        if not (path / file).is_file():
            raise CheckpointError(f"Checkpoint {path} is incomplete: {file} is missing.")
    return dict(meta)


def load_weights(path: Path, *, ema: bool = False) -> dict[str, torch.Tensor]:
    return load_file(str(path / (EMA_FILE if ema else WEIGHTS_FILE)))


def load_trainer_state(path: Path) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(path / TRAINER_FILE, weights_only=True)
    return state


def pick_for_sampling(directory: Path) -> CheckpointInfo:
    """The best checkpoint (most recent improvement), else the latest last one (seed 001)."""
    best = list_checkpoints(directory, "best")
    if best:
        return best[-1]
    last = list_checkpoints(directory, "last")
    if last:
        return last[-1]
    raise CheckpointError(
        f"No checkpoint in {directory}: neither ckpt_best_* nor ckpt_last_* exists. Train "
        "first with 'mlx train', or pass --checkpoint PATH."
    )


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load weights, allowing only the tied twin that was stored once to be absent.

    A checkpoint of another architecture names the first mismatching tensor and both shapes.
    """
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise CheckpointError(
            f"The checkpoint holds tensors this model does not have: {', '.join(unexpected[:5])}."
        )
    for key, tensor in state.items():
        if own[key].shape != tensor.shape:
            raise CheckpointError(
                f"Checkpoint tensor {key} has shape {tuple(tensor.shape)} but the model expects "
                f"{tuple(own[key].shape)}: the checkpoint is of another architecture."
            )
    ptrs = {own[k].data_ptr() for k in state}
    missing = [k for k in own if k not in state and own[k].data_ptr() not in ptrs]
    if missing:
        raise CheckpointError(f"The checkpoint lacks tensors: {', '.join(missing[:5])}.")
    model.load_state_dict(state, strict=False)
