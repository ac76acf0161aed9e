"""Our GPT's weights in GPT-2's layout: the names, the transposed Linears, the biases a
``bias = false`` model lacks, and ``config.json``; shared by the exporters.

Its own module so that :mod:`.export` (which dispatches to the Hugging Face and GGUF
writers) and those writers (:mod:`.export_hf`, :mod:`.export_gguf`) all import it, and
none of them imports another back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlharness.errors import CheckpointError

if TYPE_CHECKING:
    import torch
    from torch import nn

LAYER_NORM_EPS = 1e-5  # torch's LayerNorm default, which our GPT uses
# Our Linear layers: GPT-2 keeps them as Conv1D, (in, out), the transpose of nn.Linear.
LINEARS = {"attn.c_attn": 3, "attn.c_proj": 1, "mlp.c_fc": 4, "mlp.c_proj": 1}  # width / n_embd


@dataclass
class Source:
    """What an export reads: the checkpoint, its record, and where its tokenizer lives."""

    run_dir: Path
    checkpoint: Path
    meta: dict[str, Any]
    tokenizer_dir: Path


def model_name(run_dir: Path) -> str:
    """The name a GGUF file gives its model: the run's experiment and stamp."""
    return f"{run_dir.parent.name}-{run_dir.name}"


def merged_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s weights with any LoRA adapters merged and PEFT's names gone: what a
    model without adapters would hold (shared with GRPO's checkpoints of our GPT).

    Merged out of place: PEFT's merge_adapter/unmerge_adapter round trip adds and subtracts
    the adapters' delta in the base weights, and W + BA - BA is not W in floating point, so
    merging in place would move the frozen base.
    """
    import torch

    state = {
        k.replace(".base_layer", ""): v.detach().clone()
        for k, v in model.state_dict().items()
        if "lora_" not in k
    }
    if not any("lora_" in k for k, _ in model.named_parameters()):
        return state
    from peft.tuners.lora import LoraLayer

    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, LoraLayer):
                for adapter in module.active_adapters:
                    if adapter in module.lora_A:  # every concrete LoRA layer has it
                        delta = module.get_delta_weight(adapter)  # type: ignore[attr-defined]
                        state[f"{name}.weight"] += delta
    return state


def full_state(state: dict[str, torch.Tensor], args: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Our GPT's tensors under our names, every bias present (zeros where ``bias = false``)."""
    import torch

    C = int(args["n_embd"])
    needed = ["wte.weight", "wpe.weight", "ln_f.weight"]
    for i in range(int(args["n_layer"])):
        needed += [f"h.{i}.{ln}.weight" for ln in ("ln_1", "ln_2")]
        needed += [f"h.{i}.{lin}.weight" for lin in LINEARS]
    missing = [k for k in needed if k not in state]
    if missing:
        raise CheckpointError(
            f"The checkpoint lacks tensors {', '.join(missing[:3])}: it is not a GPT of this "
            "project's layout, so it cannot be exported as GPT-2."
        )
    full = {k: v for k, v in state.items() if k != "lm_head.weight"}  # tied to wte
    biases = {"ln_f.bias": C}
    for i in range(int(args["n_layer"])):
        biases |= {f"h.{i}.ln_1.bias": C, f"h.{i}.ln_2.bias": C}
        biases |= {f"h.{i}.{lin}.bias": width * C for lin, width in LINEARS.items()}
    for key, size in biases.items():
        if key not in full:
            full[key] = torch.zeros(size, dtype=state["wte.weight"].dtype)
    return full


def hf_state(state: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    """GPT-2's names and layout: ``transformer.`` prefixed, Linear weights transposed."""
    import torch

    target = getattr(torch, dtype)
    out = {}
    for key, tensor in state.items():
        if is_linear(key):
            tensor = tensor.t()
        out[f"transformer.{key}"] = tensor.to(target).contiguous()
    return out


def is_linear(key: str) -> bool:
    """Whether ``key`` (``h.3.mlp.c_fc.weight``) is the weight of one of a block's Linears."""
    parts = key.split(".")
    return len(parts) == 5 and parts[4] == "weight" and ".".join(parts[2:4]) in LINEARS


def hf_config(args: dict[str, Any], eos: int | None, dtype: str) -> dict[str, Any]:
    """``config.json`` of ``GPT2LMHeadModel`` with our shape and our (exact) GELU."""
    dropout = float(args.get("dropout", 0.0))
    block_size = int(args["block_size"])
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": int(args["vocab_size"]),
        "n_positions": block_size,
        "n_ctx": block_size,  # read by llama.cpp's convert_hf_to_gguf.py
        "n_embd": int(args["n_embd"]),
        "n_layer": int(args["n_layer"]),
        "n_head": int(args["n_head"]),
        "n_inner": None,
        "activation_function": "gelu",
        "resid_pdrop": dropout,
        "embd_pdrop": dropout,
        "attn_pdrop": dropout,
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "dtype": dtype,
    }
