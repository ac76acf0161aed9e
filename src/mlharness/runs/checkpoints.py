"""Checkpoint directories of lm and rl runs, whatever model they hold (seed 004's policy).

    ckpt_last_00000250/                  or  ckpt_best_00000250_val_loss_1.8860/
      checkpoint.json    schema, kind, step, and what the engine needs to rebuild its model
      model.safetensors  weights (no pickle on the load path)
      trainer.pt         optimizer state, every RNG, data position (torch.load weights_only)

This module owns the names, the listing and the rotation (``keep.last`` rotating last
checkpoints, ``keep.best`` best ones), the files every engine writes the same way, and the
one message for a file that is there but damaged. What a checkpoint.json must hold and how
a model is rebuilt from it belong to the engine (``lm/checkpoints.py``, ``rl/checkpoints.py``).
torch and safetensors are imported only by the functions that read or write tensors.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlharness.errors import CheckpointError
from mlharness.runs.io import remove_directory

if TYPE_CHECKING:
    import torch

SCHEMA = 1
META_FILE = "checkpoint.json"
WEIGHTS_FILE = "model.safetensors"
TRAINER_FILE = "trainer.pt"
_NAME = re.compile(r"^ckpt_(last|best)_(\d{8})(?:_.*)?$")


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    kind: str  # "last" or "best"
    iter: int


# ----------------------------------------------------------------------------- names


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


def newest_checkpoint(run_dir: Path) -> CheckpointInfo | None:
    """A run's newest complete checkpoint (at one iteration, the last one over the best)."""
    found = list_checkpoints(run_dir / "checkpoints")
    return found[-1] if found else None


def newest_trained_run(parent: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest run under ``parent`` with a checkpoint past step 0, and the newer runs
    passed over with why: a run holding only its initial checkpoint is untrained noise."""
    runs = sorted(p for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
    skipped: list[tuple[Path, str]] = []
    for run_dir in reversed(runs):
        found = list_checkpoints(run_dir / "checkpoints")
        if any(c.iter > 0 for c in found):
            return run_dir, skipped
        why = "it holds only its initial checkpoint (step 0)" if found else "it has no checkpoint"
        skipped.append((run_dir, why))
    return None, skipped


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


def rotate(directory: Path, kind: str, keep: int) -> None:
    """Delete the oldest checkpoints of ``kind`` beyond ``keep`` (for best: the worst ones).

    Best checkpoints are written only on improvement, so the newest are also the best.
    A deletion cut short leaves a hidden leftover, never a half checkpoint under its name.
    """
    existing = list_checkpoints(directory, kind)
    for info in existing[: max(len(existing) - keep, 0)]:
        remove_directory(info.path)


# ----------------------------------------------------------------------------- damage


def _reason(exc: BaseException | str) -> str:
    """The loader's first sentence, kept short: torch's complaints run on for a paragraph."""
    if isinstance(exc, str):
        return exc
    text = str(exc).strip()
    line = text.splitlines()[0].split(". ")[0].rstrip(".") if text else ""
    line = line if len(line) <= 100 else line[:97] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def remedy(path: Path) -> str:
    """What to do about an unusable checkpoint: resume and sampling take the newest one,
    so removing it makes them use the one before it."""
    return (
        f"delete the checkpoint directory {path} so the one before it is used, or start a new "
        "run with 'mlx train --fresh'"
    )


def damaged(path: Path, file: str, exc: BaseException | str) -> CheckpointError:
    """The one message for a checkpoint file that exists but cannot be parsed.

    The fix is the same whichever file it is: the directory is unusable as a whole.
    """
    return CheckpointError(
        f"Checkpoint file {path / file} is damaged or truncated ({_reason(exc)}): {remedy(path)}."
    )


def missing(path: Path, file: str) -> CheckpointError:
    return CheckpointError(f"Checkpoint {path} is incomplete: {file} is missing; {remedy(path)}.")


def _load_file_error(path: Path, file: str, exc: Exception) -> CheckpointError:
    if isinstance(exc, FileNotFoundError):
        return missing(path, file)
    if isinstance(exc, OSError):
        return CheckpointError(
            f"Cannot read {path / file} ({exc.strerror or exc}): check that it is a readable file."
        )
    return damaged(path, file, exc)


# ----------------------------------------------------------------------------- files


def read_checkpoint_json(path: Path) -> dict[str, Any]:
    """``checkpoint.json`` as a dict; absent, unreadable or not an object is a CheckpointError."""
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
    return meta


def unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage (a tied lm_head): store each once.
    seen: dict[int, str] = {}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        ptr = tensor.data_ptr()
        if ptr in seen:
            continue
        seen[ptr] = key
        out[key] = tensor.detach().contiguous().cpu()
    return out


def save_weights(state: dict[str, torch.Tensor], file: Path) -> None:
    """A state dict as safetensors, tied tensors stored once (see :func:`load_into`)."""
    from safetensors.torch import save_file

    save_file(unique_tensors(state), str(file))


def load_weights(path: Path, file: str = WEIGHTS_FILE) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path / file))
    # Damaged bytes make safetensors raise its own SafetensorError (a bare Exception
    # subclass), so nothing narrower than Exception catches every way the file can be bad.
    except Exception as exc:
        raise _load_file_error(path, file, exc) from exc


def save_trainer_state(state: dict[str, Any], directory: Path) -> None:
    import torch

    torch.save(state, directory / TRAINER_FILE)


def load_trainer_state(path: Path) -> dict[str, Any]:
    """Unpickle trainer.pt, turning every way it can be damaged into a CheckpointError.

    torch reports a damaged file as EOFError (empty), RuntimeError (truncated zip),
    KeyError or UnpicklingError (garbage); EOFError in particular must not escape, since
    click turns it into a bare "Aborted." that names no file.
    """
    import torch

    try:
        state = torch.load(path / TRAINER_FILE, weights_only=True)
    except Exception as exc:
        raise _load_file_error(path, TRAINER_FILE, exc) from exc
    if not isinstance(state, dict):
        raise damaged(path, TRAINER_FILE, f"it holds a {type(state).__name__}, not a dict")
    return state


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
    absent = [k for k in own if k not in state and own[k].data_ptr() not in ptrs]
    if absent:
        raise CheckpointError(f"The checkpoint lacks tensors: {', '.join(absent[:5])}.")
    model.load_state_dict(state, strict=False)
