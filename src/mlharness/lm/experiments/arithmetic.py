"""Generated arithmetic problems, one ``a+b=c`` per line, character-level.

The base model of the GRPO quick start: a small GPT learns the format and some sums here,
and GRPO then raises its accuracy. Same config, same file, on any machine.
"""

from __future__ import annotations

import json
import operator
import random
from collections.abc import Callable
from pathlib import Path

from mlharness.lm.config import ArithmeticConfig
from mlharness.lm.prepare import PrepareContext, Source, refuse_input
from mlharness.lm.registry import register
from mlharness.runs.io import atomic_write_text

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
    refuse_input(ctx, "its problems")  # before the prompt files are written
    text = generate_problems(ctx.config.prepare.arithmetic)
    write_prompt_files(text, ctx.config.prepare.val_fraction, ctx.data_dir)
    return Source(text=text)


def write_prompt_files(text: str, val_fraction: float, data_dir: Path) -> tuple[int, int]:
    """``grpo_train.jsonl`` and ``grpo_val.jsonl``: the problems as GRPO prompts.

    Train prompts are the distinct problems of the training text. Validation prompts are
    the problems of the validation tail that never occur in the training text, so the
    GRPO quick start measures accuracy on problems the GPT has never seen. Returns the
    two counts.
    """
    cut = len(text) - max(1, round(len(text) * val_fraction))  # the token split (char-level)
    train_lines = text[:cut].splitlines()
    if not text[:cut].endswith("\n") and train_lines:
        train_lines.pop()  # the line the cut runs through belongs to neither side
    val_start = text.find("\n", cut - 1) + 1 if cut else 0
    seen = set(train_lines)
    val_lines = [line for line in text[val_start:].splitlines() if line and line not in seen]

    def jsonl(lines: list[str]) -> str:
        rows = []
        for line in dict.fromkeys(lines):  # distinct, in order
            prompt, answer = line.split("=")
            rows.append(json.dumps({"prompt": f"{prompt}=", "completion": answer}))
        return "\n".join(rows) + "\n"

    data_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(data_dir / "grpo_train.jsonl", jsonl(train_lines))
    atomic_write_text(data_dir / "grpo_val.jsonl", jsonl(val_lines))
    return len(dict.fromkeys(train_lines)), len(dict.fromkeys(val_lines))
