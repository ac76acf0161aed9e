"""Bundestag speeches, one token per character, from a text file the user provides.

There is no public download: put the UTF-8 text at ``<data_dir>/input.txt`` or pass
``--input PATH``.
"""

from __future__ import annotations

from mlharness.lm.prepare import PrepareContext, Source, input_file
from mlharness.lm.registry import register


@register(
    "bundestag_char",
    defaults={"prepare": {"tokenizer": "char"}},
    description="Bundestag speeches (your UTF-8 text file), character-level.",
)
def prepare(ctx: PrepareContext) -> Source:
    return input_file(ctx)
