"""Any UTF-8 text file, with the tokenizer of your choice (``prepare.tokenizer``)."""

from __future__ import annotations

from mlharness.lm.prepare import PrepareContext, Source, input_file
from mlharness.lm.registry import register


@register(
    "text",
    description="Any UTF-8 text file (--input); tokenizer from prepare.tokenizer "
    "(char, bpe or tiktoken:<encoding>).",
)
def prepare(ctx: PrepareContext) -> Source:
    return input_file(ctx)
