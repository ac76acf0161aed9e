"""Our GPT as a GGUF file for llama.cpp (and Ollama), written with llama.cpp's own ``gguf``.

The file is what llama.cpp's ``convert_hf_to_gguf.py`` makes of a GPT-2 checkpoint:
architecture ``gpt2``, tensors in nn.Linear layout (out, in) under llama.cpp's names
(``token_embd``, ``blk.N.attn_qkv``, ...), no ``output`` tensor (llama.cpp ties it to
``token_embd`` when absent), and the tokenizer as a byte-level BPE (``tokenizer.ggml.model
= "gpt2"``: tokens, token types, merges). One-dimensional tensors (norms, biases) and the
position embeddings stay float32 whatever the ``dtype``, as the converter keeps them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlharness.errors import ModelError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from mlharness.lm.export_tokenizer import Vocabulary
    from mlharness.lm.tokenizers import Tokenizer

GGUF_FILE = "model.gguf"
MODELFILE = "Modelfile"
# Our names -> llama.cpp's, per block (blk.N.) and for the whole model.
BLOCK_NAMES = {
    "ln_1": "attn_norm",
    "attn.c_attn": "attn_qkv",
    "attn.c_proj": "attn_output",
    "ln_2": "ffn_norm",
    "mlp.c_fc": "ffn_up",
    "mlp.c_proj": "ffn_down",
}
MODEL_NAMES = {"wte": "token_embd", "wpe": "position_embd", "ln_f": "output_norm"}


def gguf_name(key: str) -> str:
    """llama.cpp's name: ``h.3.mlp.c_fc.weight`` -> ``blk.3.ffn_up.weight``."""
    module, kind = key.rsplit(".", 1)
    if module in MODEL_NAMES:
        return f"{MODEL_NAMES[module]}.{kind}"
    _, block, layer = module.split(".", 2)
    return f"blk.{block}.{BLOCK_NAMES[layer]}.{kind}"


def write_gguf(
    directory: Path,
    state: dict[str, torch.Tensor],
    args: dict[str, Any],
    tokenizer: Tokenizer,
    dtype: str,
    name: str,
) -> Path:
    """``directory/model.gguf`` and an Ollama ``Modelfile`` that points at it."""
    import gguf

    from mlharness.lm.export_tokenizer import vocabulary
    from mlharness.lm.export_weights import LAYER_NORM_EPS

    vocab = vocabulary(tokenizer)
    rows = int(args["vocab_size"])
    if len(vocab.tokens) > rows:
        raise ModelError(
            f"The tokenizer has {len(vocab.tokens)} tokens but the model only {rows} "
            "embeddings: this checkpoint was not trained with this run's tokenizer."
        )
    # llama.cpp takes the vocabulary size from the token list: padded embedding rows (a
    # vocab_size rounded up, as nanoGPT's 50304) get placeholder tokens.
    vocab.tokens += [None] * (rows - len(vocab.tokens))
    if vocab.pre_tokenizer != "gpt-2":
        raise ModelError(
            "This run's tiktoken encoding splits text with a pattern llama.cpp has no "
            "GPT-2-style pre-tokenizer for, so a GGUF file would tokenize differently: "
            "export it with --format hf instead."
        )
    path = directory / GGUF_FILE
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_name(name)
    writer.add_context_length(int(args["block_size"]))
    writer.add_embedding_length(int(args["n_embd"]))
    writer.add_feed_forward_length(4 * int(args["n_embd"]))
    writer.add_block_count(int(args["n_layer"]))
    writer.add_head_count(int(args["n_head"]))
    writer.add_layer_norm_eps(float(args.get("layer_norm_eps", LAYER_NORM_EPS)))
    writer.add_file_type(gguf.LlamaFileType[FILE_TYPES[dtype]])
    _add_vocabulary(writer, vocab)
    for key, tensor in sorted(state.items(), key=lambda kv: _order(kv[0])):
        data, qtype = _encode(gguf_name(key), tensor, dtype)
        writer.add_tensor(gguf_name(key), data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    (directory / MODELFILE).write_text(modelfile(vocab), encoding="utf-8")
    return path


def _order(key: str) -> tuple[int, str]:
    """Embeddings, then the blocks in order, then the final norm (the converter's order)."""
    if key.startswith("h."):
        return 1 + int(key.split(".")[1]), key
    return (0 if key.startswith(("wte", "wpe")) else 1 << 30), key


def _add_vocabulary(writer: Any, vocab: Vocabulary) -> None:
    import gguf

    from mlharness.lm.export_tokenizer import byte_level

    tokens, types = [], []
    for i, text in enumerate(vocab.tokens):
        if text is None:  # an id no token has: a placeholder, as llama.cpp's converter writes
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(text)
            types.append(gguf.TokenType.CONTROL if i in vocab.special else gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre_tokenizer)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # llama.cpp refuses a gpt2 vocabulary without merges, and gguf an empty list; a char
    # vocabulary of one-byte characters has none. The byte 0xFF never occurs in UTF-8, so
    # (ÿ, ÿ) stands in as a merge that can never apply.
    merges = vocab.merges or [(byte_level(b"\xff"), byte_level(b"\xff"))]
    writer.add_token_merges([f"{left} {right}" for left, right in merges])
    if vocab.eos_id is not None:
        writer.add_bos_token_id(vocab.eos_id)
        writer.add_eos_token_id(vocab.eos_id)
    # Our models were trained on plain token streams: nothing goes before or after a prompt.
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)


def _encode(name: str, tensor: torch.Tensor, dtype: str) -> tuple[np.ndarray, Any]:
    """The tensor's data for the file and its GGML type.

    Norms, biases and position embeddings stay float32 (llama.cpp's converter keeps them
    so); a matrix whose rows do not split into Q8_0's blocks of 32 falls back to float16.
    """
    import gguf
    import numpy as np

    data = tensor.detach().float().cpu().numpy()
    qtype = gguf.GGMLQuantizationType[QUANT_TYPES[dtype]]
    if data.ndim == 1 or name.startswith("position_embd"):
        qtype = gguf.GGMLQuantizationType.F32
    if qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % 32:
        qtype = gguf.GGMLQuantizationType.F16
    out: np.ndarray = gguf.quants.quantize(np.ascontiguousarray(data), qtype)
    return out, qtype


QUANT_TYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "q8_0": "Q8_0"}
FILE_TYPES = {
    "float32": "ALL_F32",
    "float16": "MOSTLY_F16",
    "bfloat16": "MOSTLY_BF16",
    "q8_0": "MOSTLY_Q8_0",
}


def modelfile(vocab: Vocabulary) -> str:
    """An Ollama Modelfile: ``ollama create NAME -f Modelfile`` in this directory.

    Plain completion: the prompt goes to the model as it is (no chat template).
    """
    lines = [f"FROM ./{GGUF_FILE}", 'TEMPLATE "{{ .Prompt }}"']
    if vocab.eos_id is not None:
        lines.append(f'PARAMETER stop "{vocab.special[vocab.eos_id]}"')
    return "\n".join(lines) + "\n"
