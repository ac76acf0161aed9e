"""``mlx eval --run-dir`` on an lm run: a checkpoint's loss and perplexity on its own data.

The loss the trainer logs is an estimate from ``eval_iters`` random batches, which the seed
moves by a few hundredths. Evaluation scores fixed windows instead: consecutive,
non-overlapping ``block_size`` windows spread evenly over each split (all of them when the
split has at most ``max_tokens`` tokens), so two checkpoints, or two runs, are compared on
exactly the same tokens. The data is the run's prepared data, checked to be the data it was
trained on; the report goes to ``<run>/eval/<checkpoint>.json`` and ``.md``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlharness.errors import CheckpointError, EvaluationError
from mlharness.lm import checkpoints as ckpt
from mlharness.lm.config import LMConfig, lm_config_from_raw
from mlharness.lm.hf_model import HFModel
from mlharness.lm.meta import data_changes, load_meta
from mlharness.lm.model import GPT
from mlharness.lm.sampler import load_model
from mlharness.runs import checkpoints as run_ckpt
from mlharness.runs.device import resolve_device
from mlharness.runs.io import atomic_write_json, atomic_write_text

MAX_TOKENS = 262_144
"""Tokens scored per split by default: every window of tiny-shakespeare's val split."""

SPLITS = ("train", "val")


def checkpoint_dir(run_dir: Path, checkpoint: str | Path | None) -> Path:
    """The checkpoint to evaluate: a name in ``checkpoints/``, a path, or best else last."""
    directory = run_dir / "checkpoints"
    if checkpoint is None:
        return run_ckpt.pick_for_sampling(directory).path
    path = Path(checkpoint)
    chosen = path if path.is_dir() else directory / str(checkpoint)
    if not chosen.is_dir():
        names = ", ".join(c.path.name for c in run_ckpt.list_checkpoints(directory)) or "none"
        raise CheckpointError(
            f"No checkpoint '{checkpoint}' in {directory} (it has: {names}). Pass one of those "
            "names to --checkpoint, or leave it out for the best (else the last)."
        )
    return chosen


def run_config(checkpoint: Path) -> LMConfig:
    """The config the checkpoint was trained with (its own snapshot, paths resolved)."""
    meta = ckpt.read_meta(checkpoint)
    if "config" not in meta:
        raise EvaluationError(f"{checkpoint} holds no config snapshot: it is not an lm checkpoint.")
    return lm_config_from_raw(meta["config"], Path("/"))


def split_tokens(config: LMConfig, run_dir: Path) -> dict[str, np.ndarray]:
    """Each split's tokens, after checking they are the tokens the run was trained on."""
    data_dir = config.data_dir
    if not (data_dir / "meta.json").is_file():
        raise EvaluationError(
            f"The run's data is not prepared at {data_dir}: run 'mlx prepare "
            f"{config.experiment} --config FILE' with the run's config first."
        )
    meta = load_meta(data_dir)
    if (run_dir / "meta.json").is_file():
        changed = data_changes(read_json(run_dir / "meta.json"), run_dir, meta, data_dir)
        if changed:
            raise EvaluationError(
                f"The data at {data_dir} was prepared anew since run {run_dir.name} trained "
                f"({', '.join(changed)} changed): its scores would be of other tokens. "
                "Prepare it as the run had it (its meta.json says how), or evaluate a run "
                "trained on the data as it is."
            )
    dtype = np.dtype(meta.get("dtype", "uint16"))
    return {s: np.memmap(data_dir / f"{s}.bin", dtype=dtype, mode="r") for s in SPLITS}


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"{path} cannot be read ({exc}): the run is damaged.") from exc
    if not isinstance(value, dict):
        raise EvaluationError(f"{path} does not hold a JSON object: the run is damaged.")
    return value


def window_starts(n_tokens: int, block_size: int, max_tokens: int) -> np.ndarray:
    """Starts of non-overlapping windows spread evenly over the split, at most ``max_tokens``.

    >>> window_starts(101, 10, 1000).tolist()
    [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]
    >>> window_starts(101, 10, 30).tolist()
    [0, 40, 90]
    """
    windows = (n_tokens - 1) // block_size
    keep = min(windows, max(1, max_tokens // block_size))
    if windows < 1:
        return np.zeros(0, dtype=np.int64)
    picked = np.linspace(0, windows - 1, keep).round().astype(np.int64)
    return np.unique(picked) * block_size


@torch.no_grad()
def split_loss(
    model: GPT | HFModel, tokens: np.ndarray, starts: np.ndarray, device: torch.device
) -> float:
    """Mean next-token cross-entropy over the windows at ``starts``."""
    block = model.config.block_size
    offsets = np.arange(block + 1)
    total, count = 0.0, 0
    for first in range(0, len(starts), 64):
        batch = starts[first : first + 64]
        window = torch.from_numpy(tokens[batch[:, None] + offsets].astype(np.int64)).to(device)
        x, y = window[:, :-1], window[:, 1:]
        _, loss = model(x, y)
        total += float(loss) * y.numel()
        count += y.numel()
    return total / count


def evaluate(
    run_dir: Path, checkpoint: str | Path | None = None, *, max_tokens: int = MAX_TOKENS
) -> dict[str, Any]:
    """Score the checkpoint on the run's train and val splits; write eval/<checkpoint>.*."""
    if not (run_dir / "checkpoints").is_dir():
        raise EvaluationError(f"{run_dir} has no checkpoints/: it is not a trained lm run.")
    if max_tokens < 1:
        raise EvaluationError(f"--max-tokens must be at least 1; got {max_tokens}.")
    started = time.perf_counter()
    chosen = checkpoint_dir(run_dir, checkpoint)
    config = run_config(chosen)
    tokens = split_tokens(config, run_dir)
    device = resolve_device(config.train.device)
    model, meta = load_model(chosen, device, use_ema=True)
    results: dict[str, Any] = {}
    for split in SPLITS:
        starts = window_starts(len(tokens[split]), config.model.block_size, max_tokens)
        if len(starts) == 0:
            raise EvaluationError(
                f"The {split} split has fewer than block_size + 1 = "
                f"{config.model.block_size + 1} tokens: nothing to score."
            )
        loss = split_loss(model, tokens[split], starts, device)
        scored = len(starts) * config.model.block_size
        results[split] = {
            "loss": loss,
            "perplexity": math.exp(loss),
            "tokens_scored": scored,
            "tokens_in_split": len(tokens[split]),
        }
    report = {
        "run_dir": str(run_dir),
        "checkpoint": str(chosen),
        "iter": meta.get("iter"),
        "ema": bool(meta.get("has_ema")),
        "seconds": round(time.perf_counter() - started, 2),
        "results": results,
    }
    return {**report, **_write(run_dir, chosen, report)}


def _write(run_dir: Path, chosen: Path, report: dict[str, Any]) -> dict[str, Any]:
    lines = [
        f"# Evaluation of {chosen.name}",
        "",
        "| split | loss | perplexity | tokens scored |",
        "|---|---|---|---|",
    ]
    for split, r in report["results"].items():
        share = f"{r['tokens_scored']:,} of {r['tokens_in_split']:,}"
        lines.append(f"| {split} | {r['loss']:.4f} | {r['perplexity']:.3f} | {share} |")
    markdown = "\n".join([*lines, ""])
    out = run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{chosen.name}.json", out / f"{chosen.name}.md"
    atomic_write_json(json_path, report)
    atomic_write_text(md_path, markdown)
    return {"markdown": markdown, "files": [str(json_path), str(md_path)]}
