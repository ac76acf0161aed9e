"""Tiny Shakespeare in GPT-2's BPE via tiktoken (nanoGPT's ``shakespeare``)."""

from __future__ import annotations

from mlharness.lm.experiments.shakespeare_char import TINY_SHAKESPEARE_URL
from mlharness.lm.prepare import PrepareContext, Source, input_file
from mlharness.lm.registry import register


@register(
    "shakespeare",
    defaults={"prepare": {"tokenizer": "tiktoken:gpt2", "url": TINY_SHAKESPEARE_URL}},
    description="Tiny Shakespeare (1.1 MB, downloaded or --input), GPT-2 BPE tokens.",
)
def prepare(ctx: PrepareContext) -> Source:
    return input_file(ctx)
