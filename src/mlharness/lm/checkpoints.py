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
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mlharness.errors import CheckpointError
from mlharness.runs.io import atomic_directory, atomic_write_json, remove_directory

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
    A deletion cut short leaves a hidden leftover, never a half checkpoint under its name.
    """
    existing = list_checkpoints(directory, kind)
    for info in existing[: max(len(existing) - keep, 0)]:
        remove_directory(info.path)


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
    except ValueError as exc:  # undecodable bytes or broken JSON: a truncated write
        raise damaged(path, META_FILE, exc) from exc
    except OSError as exc:
        raise CheckpointError(
            f"Cannot read {meta_path} ({exc.strerror or exc}): check that it is a readable file."
        ) from exc
    if not isinstance(meta, dict):
        raise damaged(path, META_FILE, f"it holds a JSON {type(meta).__name__}, not an object")
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise CheckpointError(
            f"Checkpoint {path} is incomplete: {META_FILE} lacks {', '.join(missing)}; "
            f"{_remedy(path)}."
        )
    if meta["schema"] != SCHEMA:
        raise CheckpointError(
            f"Checkpoint {path} has schema {meta['schema']}, this version reads schema "
            f"{SCHEMA}. Use the mlharness version that wrote it."
        )
    for file in (WEIGHTS_FILE, TRAINER_FILE) + ((EMA_FILE,) if meta.get("has_ema") else ()):
        if not (path / file).is_file():
            raise _missing(path, file)
    return dict(meta)


def _reason(exc: BaseException | str) -> str:
    """The loader's first sentence, kept short: torch's complaints run on for a paragraph."""
    if isinstance(exc, str):
        return exc
    text = str(exc).strip()
    line = text.splitlines()[0].split(". ")[0].rstrip(".") if text else ""
    line = line if len(line) <= 100 else line[:97] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def damaged(path: Path, file: str, exc: BaseException | str) -> CheckpointError:
    """The one message for a checkpoint file that exists but cannot be parsed.

    The fix is the same whichever file it is: the directory is unusable as a whole.
    """
    return CheckpointError(
        f"Checkpoint file {path / file} is damaged or truncated ({_reason(exc)}): {_remedy(path)}."
    )


def _missing(path: Path, file: str) -> CheckpointError:
    return CheckpointError(f"Checkpoint {path} is incomplete: {file} is missing; {_remedy(path)}.")


def _remedy(path: Path) -> str:
    """What to do about an unusable checkpoint: resume and sampling take the newest one,
    so removing it makes them use the one before it."""
    return (
        f"delete the checkpoint directory {path} so the one before it is used, or start a new "
        "run with 'mlx train --fresh'"
    )


def _load_file_error(path: Path, file: str, exc: Exception) -> CheckpointError:
    if isinstance(exc, FileNotFoundError):
        return _missing(path, file)
    if isinstance(exc, OSError):
        return CheckpointError(
            f"Cannot read {path / file} ({exc.strerror or exc}): check that it is a readable file."
        )
    return damaged(path, file, exc)


def load_weights(path: Path, *, ema: bool = False) -> dict[str, torch.Tensor]:
    file = EMA_FILE if ema else WEIGHTS_FILE
    try:
        return load_file(str(path / file))
    # Damaged bytes make safetensors raise its own SafetensorError (a bare Exception
    # subclass), so nothing narrower than Exception catches every way the file can be bad.
    except Exception as exc:
        raise _load_file_error(path, file, exc) from exc


def load_trainer_state(path: Path) -> dict[str, Any]:
    """Unpickle trainer.pt, turning every way it can be damaged into a CheckpointError.

    torch reports a damaged file as EOFError (empty), RuntimeError (truncated zip),
    KeyError or UnpicklingError (garbage); EOFError in particular must not escape, since
    click turns it into a bare "Aborted." that names no file.
    """
    try:
        state = torch.load(path / TRAINER_FILE, weights_only=True)
    except Exception as exc:
        raise _load_file_error(path, TRAINER_FILE, exc) from exc
    if not isinstance(state, dict):
        raise damaged(path, TRAINER_FILE, f"it holds a {type(state).__name__}, not a dict")
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
