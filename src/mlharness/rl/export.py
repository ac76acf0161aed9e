"""``mlx export`` of a GRPO run: the policy it trained, in the formats its users load.

A policy of our GPT exports as GPT-2 exactly as an lm run does (:mod:`mlharness.lm.export`):
its checkpoints already hold the weights with any LoRA adapters merged. A Hugging Face
policy keeps its own architecture, config and tokenizer: full weights are saved again with
``save_pretrained``; LoRA adapters are merged into the base with PEFT's
``merge_and_unload``, or, with ``adapter_only``, written as the PEFT adapter directory that
``PeftModel.from_pretrained`` loads on top of the base.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from mlharness.errors import ConfigError
from mlharness.lm import export as lm_export
from mlharness.lm.export import ExportResult
from mlharness.rl import checkpoints as rl_ckpt
from mlharness.rl.policy import HF_DIR
from mlharness.runs.io import atomic_directory

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def export(
    checkpoint: Path,
    fmt: str,
    *,
    out: Path | None = None,
    dtype: str = "float32",
    force: bool = False,
    adapter_only: bool = False,
    say: Callable[[str], None] = print,
) -> ExportResult:
    """Write the policy in rl ``checkpoint`` as ``fmt`` into ``out`` (default: under the run)."""
    lm_export.check_options(fmt, dtype)
    meta = rl_ckpt.read(checkpoint)
    if meta.get("model_type") == "gpt":
        if adapter_only:
            raise ConfigError(
                "--adapter-only needs a Hugging Face base model: this run trained our GPT, "
                "whose checkpoints hold its LoRA adapters merged; export it without "
                "--adapter-only (as GPT-2)."
            )
        return lm_export.export(
            checkpoint, fmt, out=out, dtype=dtype, force=force, ema=False, say=say
        )
    hf_dir = checkpoint / HF_DIR
    has_adapter = (hf_dir / "adapter_config.json").is_file()
    _check_hf(fmt, adapter_only, has_adapter)
    run_dir = checkpoint.resolve().parent.parent
    what = "adapter" if adapter_only else fmt
    out = out if out is not None else lm_export.default_out(run_dir, checkpoint, what, dtype)
    lm_export.check_out(out, force)
    merging = " (LoRA merged into the base)" if has_adapter and not adapter_only else ""
    say(f"Exporting {checkpoint} (step {meta['step']}) as {what} {dtype}{merging} to {out} ...")
    with atomic_directory(out) as tmp:
        if adapter_only:
            _copy_adapter(hf_dir, tmp)
        else:
            _save_merged(checkpoint, tmp, dtype)
    say(f"Exported: {out}")
    return ExportResult(out, checkpoint, what, dtype)


def _check_hf(fmt: str, adapter_only: bool, has_adapter: bool) -> None:
    if fmt == "gguf":
        raise ConfigError(
            "This run trained a Hugging Face model, which exports with --format hf; for GGUF, "
            "run llama.cpp's convert_hf_to_gguf.py on that directory."
        )
    if adapter_only and not has_adapter:
        raise ConfigError(
            "--adapter-only needs a run trained with LoRA (model.use_lora), and this one "
            "trained every weight: export it without --adapter-only."
        )


def _copy_adapter(hf_dir: Path, target: Path) -> None:
    """The adapter and the tokenizer files: everything in hf/ but full model weights."""
    for file in sorted(hf_dir.iterdir()):
        if file.is_file():
            shutil.copy2(file, target / file.name)
    config = json.loads((target / "adapter_config.json").read_text(encoding="utf-8"))
    base = Path(str(config.get("base_model_name_or_path", "")))
    if not (base / "config.json").is_file():
        raise ConfigError(
            f"The adapter's base model {base} is gone, so the adapter cannot be loaded: "
            "put the base model back there, or edit base_model_name_or_path."
        )


def _save_merged(checkpoint: Path, target: Path, dtype: str) -> None:
    """The policy with any LoRA merged (PEFT's merge_and_unload), saved with its tokenizer."""
    import torch

    from mlharness.rl.policy import load_policy

    policy = load_policy(checkpoint, device=torch.device("cpu"), trainable=False)
    model = policy.model
    if policy.uses_lora:
        model = model.merge_and_unload()  # type: ignore[operator]
    model.to(getattr(torch, dtype))
    model.save_pretrained(str(target))  # type: ignore[operator]
    tokenizer = policy.info.get("hf_tokenizer")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(target))
