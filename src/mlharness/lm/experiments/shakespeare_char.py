"""Tiny Shakespeare, one token per character (nanoGPT's ``shakespeare_char``)."""

from __future__ import annotations

from mlharness.lm.prepare import PrepareContext, Source, input_file
from mlharness.lm.registry import register

TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)


@register(
    "shakespeare_char",
    defaults={"prepare": {"tokenizer": "char", "url": TINY_SHAKESPEARE_URL}},
    description="Tiny Shakespeare (1.1 MB, downloaded or --input), character-level.",
)
def prepare(ctx: PrepareContext) -> Source:
    return input_file(ctx)
