"""Tiny lm experiments shared by the integration and end-to-end tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def nanogpt_state_dict(args: dict[str, Any], seed: int = 0, std: float = 0.3) -> dict[str, Any]:
    """Random weights under nanoGPT's own names, as a compiled nanoGPT run saves them.

    The keys are nanoGPT model.py's (``transformer.`` nesting, ``lm_head`` tied to ``wte``),
    with torch.compile's ``_orig_mod.`` prefix and the causal-mask ``attn.bias`` buffers that
    nanoGPT registers without flash attention. ``std`` is large so greedy picks are clear.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    C, T, V = args["n_embd"], args["block_size"], args["vocab_size"]

    def rand(*shape: int, mean: float = 0.0) -> torch.Tensor:
        return mean + std * torch.randn(*shape, generator=gen)

    shapes: dict[str, tuple[int, ...]] = {"ln_1": (C,), "ln_2": (C,)}
    linears = {"attn.c_attn": (3 * C, C), "attn.c_proj": (C, C)}
    linears |= {"mlp.c_fc": (4 * C, C), "mlp.c_proj": (C, 4 * C)}
    wte = rand(V, C)
    state = {"transformer.wte.weight": wte, "transformer.wpe.weight": rand(T, C)}
    for i in range(args["n_layer"]):
        h = f"transformer.h.{i}"
        for norm, shape in shapes.items():
            state[f"{h}.{norm}.weight"] = rand(*shape, mean=1.0)
            if args["bias"]:
                state[f"{h}.{norm}.bias"] = rand(*shape)
        for name, (out, inp) in linears.items():
            state[f"{h}.{name}.weight"] = rand(out, inp) / inp**0.5
            if args["bias"]:
                state[f"{h}.{name}.bias"] = rand(out)
        state[f"{h}.attn.bias"] = torch.tril(torch.ones(T, T)).view(1, 1, T, T)
    state["transformer.ln_f.weight"] = rand(C, mean=1.0)
    if args["bias"]:
        state["transformer.ln_f.bias"] = rand(C)
    state["lm_head.weight"] = wte  # tied, one storage, as nanoGPT's state_dict() has it
    return {f"_orig_mod.{k}": v for k, v in state.items()}


def write_nanogpt_checkpoint(
    directory: Path, args: dict[str, Any], chars: str | None = None, seed: int = 0
) -> Path:
    """A nanoGPT out_dir: ``ckpt.pt`` as nanoGPT's train.py writes it, and, for a char-level
    model, the ``meta.pkl`` of its data (``chars`` in id order) beside it."""
    import pickle

    import torch

    directory.mkdir(parents=True, exist_ok=True)
    state = nanogpt_state_dict(args, seed)
    checkpoint = {
        "model": state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 6e-4, "params": [0, 1]}]},
        "model_args": dict(args),
        "iter_num": 250,
        "best_val_loss": torch.tensor(1.4697),
        "config": {"dataset": "shakespeare_char", "learning_rate": 1e-3, "compile": True},
    }
    torch.save(checkpoint, directory / "ckpt.pt")
    if chars is not None:
        meta = {
            "vocab_size": len(chars),
            "itos": dict(enumerate(chars)),
            "stoi": {c: i for i, c in enumerate(chars)},
        }
        (directory / "meta.pkl").write_bytes(pickle.dumps(meta))
    return directory / "ckpt.pt"
