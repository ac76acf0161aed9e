"""Bundestag speeches in GPT-2's BPE via tiktoken, from a text file the user provides.

There is no public download: put the UTF-8 text at ``<data_dir>/input.txt`` or pass
``--input PATH``.
"""

from __future__ import annotations

from mlharness.lm.prepare import PrepareContext, Source, input_file
from mlharness.lm.registry import register


@register(
    "bundestag_tiktoken",
    defaults={"prepare": {"tokenizer": "tiktoken:gpt2"}},
    description="Bundestag speeches (your UTF-8 text file), GPT-2 BPE tokens.",
)
def prepare(ctx: PrepareContext) -> Source:
    return input_file(ctx)
