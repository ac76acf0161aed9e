"""Generated arithmetic problems, one ``a+b=c`` per line, character-level.

The base model of the GRPO quick start: a small GPT learns the format and some sums here,
and GRPO then raises its accuracy. Same config, same file, on any machine.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Callable

from mlharness.lm.config import ArithmeticConfig
from mlharness.lm.prepare import PrepareContext, Source, register

OPERATIONS: dict[str, Callable[[int, int], int]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}


def generate_problems(config: ArithmeticConfig) -> str:
    """``config.num_examples`` lines like ``12+34=46``, deterministic for ``config.seed``.

    Subtraction puts the larger operand first, so every answer is a plain non-negative
    number and a small model need not learn a minus sign in the result.

    >>> generate_problems(ArithmeticConfig(num_examples=2, max_operand=9, seed=0))
    '6+0=6\\n8+7=15\\n'
    """
    rng = random.Random(config.seed)
    lines = []
    for _ in range(config.num_examples):
        op = rng.choice(config.operations)
        a, b = rng.randint(0, config.max_operand), rng.randint(0, config.max_operand)
        if op == "-" and a < b:
            a, b = b, a
        lines.append(f"{a}{op}{b}={OPERATIONS[op](a, b)}\n")
    return "".join(lines)


@register(
    "arithmetic",
    defaults={
        "prepare": {"tokenizer": "char"},
        "model": {"block_size": 32},
        "sample": {"start": "\n", "max_new_tokens": 64},
    },
    description="Generated a+b=c problems (prepare.arithmetic), character-level.",
)
def prepare(ctx: PrepareContext) -> Source:
    return Source(text=generate_problems(ctx.config.prepare.arithmetic))
