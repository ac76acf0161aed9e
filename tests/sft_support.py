"""Supervised fine-tuning data for tests: prompt/completion pairs in GRPO's JSONL format."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from hf_lm_support import finetune_config
from mlharness.config import deep_merge


def write_pairs(path: Path, n: int = 200, seed: int = 0) -> Path:
    """``n`` sums as prompt ``"12+34="`` and completion ``"46"``, in the tiny models' vocabulary
    (every tenth with a ``system`` field, and an extra field that the reader ignores)."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        a, b = rng.randint(0, 49), rng.randint(0, 49)
        record: dict[str, Any] = {"prompt": f"{a}+{b}=", "completion": str(a + b), "id": i}
        if i % 10 == 0:
            record["system"] = "add"
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sft_config(model_dir: Path | str, pairs: Path | str, **extra: Any) -> dict[str, Any]:
    """Fine-tune ``model_dir`` on ``pairs`` with the ``sft`` preparer and its tokenizer."""
    config = finetune_config(model_dir, pairs, prepare={"preparer": "sft"})
    return deep_merge(config, extra)
