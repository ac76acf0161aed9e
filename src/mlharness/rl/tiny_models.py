"""Tiny random Hugging Face causal LMs with a character tokenizer, built offline.

Tests and ``bench/grpo.py`` train these through exactly the code path a user's local model
takes (``save_pretrained`` directory -> ``from_pretrained(local_files_only=True)``), in
seconds and without a network.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Literal

import torch

SPECIALS = ["<pad>", "<eos>", "<unk>"]
# 46 characters + 3 specials = a 49-token vocabulary, as in the TRL reference run.
CHARS = string.digits + string.ascii_lowercase + " +-*=<>/\n."

CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n"
    "{% else %}q {{ m['content'] }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}a {% endif %}"
)


def char_tokenizer(chars: str = CHARS, chat_template: bool = False):  # type: ignore[no-untyped-def]
    """A ``PreTrainedTokenizerFast`` with one token per character of ``chars``."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(dict.fromkeys(chars)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    from tokenizers import decoders

    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    if chat_template:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_model(
    directory: Path,
    *,
    arch: Literal["gpt2", "llama", "qwen2"] = "gpt2",
    n_layer: int = 2,
    n_embd: int = 32,
    n_head: int = 2,
    context: int = 128,
    seed: int = 0,
    chat_template: bool = False,
) -> Path:
    """Save a random ``arch`` model and its character tokenizer to ``directory``.

    Three layouts: GPT-2 (learned positions, Conv1D), Llama (RoPE, RMSNorm, gated MLP) and
    Qwen2 (Llama's, with biases on the query, key and value projections).
    """
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

    tok = char_tokenizer(chat_template=chat_template)
    vocab = len(tok)
    common = {
        "vocab_size": vocab,
        "bos_token_id": tok.eos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    config: GPT2Config | LlamaConfig | Qwen2Config
    if arch == "gpt2":
        config = GPT2Config(
            n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=context, **common
        )
    else:
        config = (LlamaConfig if arch == "llama" else Qwen2Config)(
            num_hidden_layers=n_layer,
            hidden_size=n_embd,
            num_attention_heads=n_head,
            num_key_value_heads=n_head,
            intermediate_size=2 * n_embd,
            max_position_embeddings=context,
            **common,
        )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    tok.save_pretrained(str(directory))
    return directory
