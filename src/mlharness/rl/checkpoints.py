"""Checkpoints of rl runs: the shared names and rotation (:mod:`mlharness.runs.checkpoints`),
with a policy of either kind inside.

    ckpt_last_00000050/            (ckpt_best_00000050_val_reward_0.8125/ on improvement)
      checkpoint.json   schema, kind, step, model type, model args or base path, config
      model.safetensors our GPT's weights, LoRA merged: `mlx sample --checkpoint` reads it
      meta.json         the GPT's tokenizer, so the checkpoint stands alone
      hf/               a Hugging Face policy: save_pretrained (weights, or the adapter)
      trainer.pt        optimizer, adapter weights, every RNG, data position (weights_only)

A checkpoint is a valid ``model.model_path``: GRPO can continue from it, and ``mlx eval``
loads it. Written atomically; the schema is checked on load.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from mlharness.errors import CheckpointError
from mlharness.rl.policy import HF_DIR, Policy, export_plain_state, load_policy_state
from mlharness.runs import checkpoints as run_ckpt
from mlharness.runs.checkpoints import META_FILE, SCHEMA, TRAINER_FILE, WEIGHTS_FILE
from mlharness.runs.io import atomic_directory, atomic_write_json


def save(
    directory: Path,
    name: str,
    *,
    kind: str,
    step: int,
    policy: Policy,
    trainer_state: dict[str, Any],
    meta: dict[str, Any],
) -> Path:
    """Write one checkpoint directory atomically and return its path."""
    target = directory / name
    with atomic_directory(target) as tmp:
        if policy.kind == "gpt":
            run_ckpt.save_weights(export_plain_state(policy), tmp / WEIGHTS_FILE)
            tok_dir = Path(policy.info["tokenizer_dir"])
            for file in ("meta.json", "tokenizer.json"):
                if (tok_dir / file).is_file():
                    shutil.copyfile(tok_dir / file, tmp / file)
        else:
            # Adapters: no embedding layers (LoRA adapts Linear ones), which PEFT would
            # otherwise check for at the base's name, a hub request for an lm checkpoint.
            extra = {"save_embedding_layers": False} if policy.uses_lora else {}
            policy.model.save_pretrained(str(tmp / HF_DIR), **extra)  # type: ignore[operator]
            tokenizer = policy.info.get("hf_tokenizer")
            if tokenizer is not None:
                tokenizer.save_pretrained(str(tmp / HF_DIR))
        run_ckpt.save_trainer_state(trainer_state, tmp)
        info = {k: v for k, v in policy.info.items() if k not in ("hf_tokenizer", "tokenizer_dir")}
        atomic_write_json(
            tmp / META_FILE,
            {
                "schema": SCHEMA,
                "kind": kind,
                "iter": step,
                "step": step,
                "created_at": datetime.now().isoformat(),
                "has_ema": False,
                "model_args": policy.info.get("model_args", {}),
                "best_val_loss": None,
                **info,
                **meta,
            },
        )
    return target


def read(path: Path) -> dict[str, Any]:
    """``checkpoint.json`` of an rl checkpoint, schema-checked, with its files present."""
    meta_path = path / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"'{path}' is not a checkpoint: it has no {META_FILE}.") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"Cannot read {meta_path}: {exc}.") from exc
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA or "step" not in meta:
        raise CheckpointError(
            f"Checkpoint {path} is not an rl checkpoint of schema {SCHEMA}; use the mlharness "
            "version that wrote it, or start with --fresh."
        )
    needed = [TRAINER_FILE]
    needed.append(WEIGHTS_FILE if meta.get("model_type") == "gpt" else HF_DIR)
    for file in needed:
        if not (path / file).exists():
            raise CheckpointError(f"Checkpoint {path} is incomplete: {file} is missing.")
    return meta


def load_policy_weights(path: Path, policy: Policy, adapters: bool) -> None:
    """Put a checkpoint's trained weights into ``policy``: its LoRA adapters (kept in
    trainer.pt), our GPT's model.safetensors, or a Hugging Face policy's hf/ shards."""
    if adapters:
        load_policy_state(policy, run_ckpt.load_trainer_state(path)["adapter"])
    elif policy.kind == "gpt":
        load_policy_state(policy, run_ckpt.load_weights(path))
    else:
        from safetensors.torch import load_file

        merged: dict[str, Any] = {}
        for file in sorted((path / HF_DIR).glob("*.safetensors")):
            merged.update(load_file(str(file)))
        policy.model.load_state_dict(merged, strict=False)
