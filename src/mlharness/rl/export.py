"""``mlx export`` of a GRPO run: the policy it trained, in the formats its users load.

A policy of our GPT exports as GPT-2 exactly as an lm run does (:mod:`mlharness.lm.export`):
its checkpoints already hold the weights with any LoRA adapters merged. A Hugging Face
policy keeps its own architecture, config and tokenizer, written as an lm run's fine-tuned
Hugging Face model is (:mod:`mlharness.lm.export_hf`): full weights saved again with
``save_pretrained``, LoRA adapters merged into the base with PEFT's ``merge_and_unload``
(GGUF for GPT-2's layout), or, with ``adapter_only``, the PEFT adapter directory that
``PeftModel.from_pretrained`` loads on top of the base.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlharness.errors import ConfigError
from mlharness.lm import export as lm_export
from mlharness.lm import export_hf
from mlharness.lm.export import ExportResult
from mlharness.lm.export_weights import model_name
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
    lm_export.check_options(fmt, dtype, adapter_only)
    meta = rl_ckpt.read(checkpoint)
    if meta.get("model_type") == "gpt":
        if adapter_only:
            raise export_hf.gpt_has_no_adapter()
        return lm_export.export(
            checkpoint, fmt, out=out, dtype=dtype, force=force, ema=False, say=say
        )
    hf_dir = checkpoint / HF_DIR
    has_adapter = (hf_dir / "adapter_config.json").is_file()
    if adapter_only and not has_adapter:
        raise export_hf.trained_every_weight("model.use_lora")
    config = _model_config(hf_dir)
    if fmt == "gguf" and config is not None:  # before a large model loads for nothing
        export_hf.check_gguf_layout(config)
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
            _save_merged(checkpoint, tmp, fmt, dtype, model_name(run_dir))
    say(f"Exported: {out}")
    return ExportResult(out, checkpoint, what, dtype)


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


def _model_config(hf_dir: Path) -> dict[str, Any] | None:
    """The policy's config.json (an adapter's: its base's), None where it cannot be read."""
    source = hf_dir
    if (hf_dir / "adapter_config.json").is_file():
        adapter = json.loads((hf_dir / "adapter_config.json").read_text(encoding="utf-8"))
        source = Path(str(adapter.get("base_model_name_or_path", "")))
    try:
        config: dict[str, Any] = json.loads((source / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # loading the policy says what is wrong
    return config


def _save_merged(checkpoint: Path, target: Path, fmt: str, dtype: str, name: str) -> None:
    """The policy with any LoRA merged (PEFT's merge_and_unload), saved with its tokenizer."""
    import torch

    from mlharness.lm.tokenizers import HFTokenizer
    from mlharness.rl.policy import load_policy

    policy = load_policy(checkpoint, device=torch.device("cpu"), trainable=False)
    tokenizer = HFTokenizer(policy.source, policy.info["hf_tokenizer"])
    export_hf.write_model(target, policy.model, tokenizer, fmt, dtype, name)
