"""Supervised fine-tuning on prompt/completion pairs (GRPO's JSONL), before GRPO.

The pairs come from ``--input`` (or ``prepare.input``), else ``<data_dir>/input.jsonl``;
:mod:`mlharness.lm.sft` says how they are tokenized, masked and batched.
"""

from __future__ import annotations

from mlharness.lm.prepare import PrepareContext, Source
from mlharness.lm.registry import register


@register(
    "sft",
    description="Prompt/completion pairs (a JSONL file in GRPO's format) for supervised "
    "fine-tuning: the loss counts the completion tokens only.",
)
def prepare(ctx: PrepareContext) -> Source:
    if ctx.input_path is not None:
        return Source(path=ctx.input_path, sft=True)
    return Source(path=ctx.data_dir / "input.jsonl", url=ctx.config.prepare.url, sft=True)
