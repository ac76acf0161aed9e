"""Fine-tuning tiny random Hugging Face models in lm runs: a model directory, text in its
vocabulary, and a config that prepares that text with the model's own tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lm_support import TINY_LM, corpus_text
from mlharness.config import deep_merge


def tiny_text() -> str:
    """The lm tests' corpus in the tiny models' character vocabulary: lower case, and one
    line (their tokenizer's per-character split does not match a newline)."""
    from mlharness.rl.tiny_models import CHARS

    return "".join(c for c in corpus_text().lower().replace("\n", " ") if c in CHARS)


def hf_model_dir(path: Path, arch: str = "gpt2", seed: int = 0) -> Path:
    from mlharness.rl.tiny_models import build_tiny_model

    return build_tiny_model(path, arch=arch, seed=seed)  # type: ignore[arg-type]


def finetune_config(model_dir: Path | str, corpus: Path | str, **extra: Any) -> dict[str, Any]:
    """TINY_LM's training, from ``model_dir`` on ``corpus`` prepared with its tokenizer."""
    train = {"checkpointing": {"keep": {"last": 10}}}
    config = deep_merge(
        {k: v for k, v in TINY_LM.items() if k != "model"},
        {
            "kind": "lm",
            "init_from": f"hf:{model_dir}",
            "prepare": {"preparer": "text", "input": str(corpus), "tokenizer": f"hf:{model_dir}"},
            "model": {"block_size": 32},
            "train": train,
        },
    )
    return deep_merge(config, extra)
