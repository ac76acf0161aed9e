"""Tiny lm experiments shared by the integration and end-to-end tests."""

from __future__ import annotations

from pathlib import Path

TINYSHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


def corpus_text(n_chars: int = 60_000) -> str:
    """Text to train tiny GPTs on: tiny-shakespeare's head where present, else generated."""
    if TINYSHAKESPEARE.is_file():
        return TINYSHAKESPEARE.read_text(encoding="utf-8")[:n_chars]
    import random

    rng = random.Random(0)
    words = ["the", "king", "queen", "speaks", "to", "a", "fair", "lord", "and", "night"]
    lines = [" ".join(rng.choice(words) for _ in range(8)) for _ in range(n_chars // 40)]
    return "\n".join(lines) + "\n"


TINY_LM = {
    "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32},
    "train": {
        "max_iters": 20,
        "batch_size": 4,
        "learning_rate": 3e-3,
        "min_lr": 3e-4,
        "warmup_iters": 2,
        "eval_interval": 10,
        "eval_iters": 2,
        "log_interval": 5,
        "device": "cpu",
        # One thread: tiny models gain nothing from two, and a busy machine cannot stall
        # a thread pool that does not exist.
        "num_threads": 1,
        "checkpointing": {"interval": 5},
    },
    "sample": {"num_samples": 2, "max_new_tokens": 20, "device": "cpu", "start": "\n"},
}
