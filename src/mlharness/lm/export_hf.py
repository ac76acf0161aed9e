"""``mlx export`` of Hugging Face models: a fine-tuned model leaves in the layout it came in.

An lm run started from ``init_from = "hf:PATH"`` (and a GRPO policy of a Hugging Face model)
keeps its architecture, config and tokenizer: the weights are saved again with
``save_pretrained``. LoRA adapters go through PEFT's own model: the run's adapters are
loaded into a ``PeftModel`` on the base the run trained on, and merged with
``merge_and_unload``, or saved as the adapter directory that ``PeftModel.from_pretrained``
loads on that base. GGUF is written here only for GPT-2's layout, which is what the GGUF
writer of our GPT spells (:mod:`.export_gguf`); other layouts go through llama.cpp's own
converter, run on the ``--format hf`` output.

These helpers are shared with ``rl.export``; transformers and peft load only when used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlharness.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    import torch

    from mlharness.lm.export_weights import Source
    from mlharness.lm.tokenizers import HFTokenizer, Tokenizer

CONVERTER = "run llama.cpp's convert_hf_to_gguf.py on that directory"
# GPT-2 settings llama.cpp's gpt2 architecture computes as written (GELU: its tanh form).
GPT2_GELUS = ("gelu_new", "gelu", "gelu_pytorch_tanh", "gelu_fast")
GPT2_BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal masks older transformers saved


# ----------------------------------------------------------------------------- refusals


def gpt_has_no_adapter() -> ConfigError:
    return ConfigError(
        "--adapter-only needs a Hugging Face base model, and this run trained our GPT, which "
        "exports with its LoRA adapters merged (as GPT-2): export it without --adapter-only."
    )


def trained_every_weight(setting: str) -> ConfigError:
    return ConfigError(
        f"--adapter-only needs a run trained with LoRA ({setting}), and this one trained "
        "every weight: export it without --adapter-only."
    )


def gguf_layout_problem(config: Mapping[str, Any]) -> str | None:
    """What keeps a model of this ``config.json`` from GGUF here, or None for GPT-2's layout."""
    kind = config.get("model_type")
    if kind != "gpt2":
        return f"a Hugging Face {kind} model"
    n_embd = int(config["n_embd"])
    differs = {
        "activation_function": config.get("activation_function") not in GPT2_GELUS,
        "n_inner": config.get("n_inner") not in (None, 4 * n_embd),
        "tie_word_embeddings": not config.get("tie_word_embeddings", True),
        "scale_attn_weights": not config.get("scale_attn_weights", True),
        "scale_attn_by_inverse_layer_idx": bool(config.get("scale_attn_by_inverse_layer_idx")),
        "reorder_and_upcast_attn": bool(config.get("reorder_and_upcast_attn")),
    }
    odd = [f"{key} = {config.get(key)!r}" for key, bad in differs.items() if bad]
    return f"a GPT-2 with {', '.join(odd)}" if odd else None


def check_gguf_layout(config: Mapping[str, Any]) -> None:
    problem = gguf_layout_problem(config)
    if problem is not None:
        raise ConfigError(
            f"This run trained {problem}, which the GGUF writer here does not spell (it writes "
            f"GPT-2's layout): export it with --format hf, then {CONVERTER}."
        )


def check_lm_run(args: Mapping[str, Any], init_from: str, fmt: str, adapter_only: bool) -> None:
    """An lm run's export options against what it trained, before anything loads."""
    hf, lora = "hf_config" in args, bool(args.get("lora"))
    if adapter_only and not lora:
        raise trained_every_weight("[lora]")
    if adapter_only and not hf:
        raise gpt_has_no_adapter()
    if adapter_only and not init_from.startswith("hf:"):
        raise ConfigError(
            "--adapter-only writes an adapter for the Hugging Face directory a run started "
            f"from, and this run started from {init_from}: export it without --adapter-only."
        )
    if hf and fmt == "gguf":
        check_gguf_layout(args["hf_config"])
    base = Path(init_from.partition(":")[2]).expanduser()
    if lora and not base.exists():
        raise CheckpointError(
            f"This LoRA run's checkpoints hold only its adapters, and its base model {base} "
            "(init_from) is gone: put the base model back there to export the run."
        )


# ----------------------------------------------------------------------------- lm runs


def lm_run_model(checkpoint: Path, meta: Mapping[str, Any]) -> Any:
    """The run's Hugging Face model: its trained weights, or PEFT's model of its adapters
    on the base it trained on (``init_from``), ready for ``merge_and_unload``."""
    import torch

    from mlharness.lm import checkpoints as lm_ckpt
    from mlharness.lm import hf_model, pretrained

    args, init_from = meta["model_args"], meta["config"].get("init_from", "scratch")
    state = lm_ckpt.load_weights(checkpoint)
    lora = args.get("lora")
    if not lora:
        model = hf_model.build_model(args)
        hf_model.load_model_state(model, state)
        return hf_model.core(model).eval()
    base: Any = hf_model.core(pretrained.base_model(args, init_from, adapters=False))
    config = hf_model.lora_config(
        base, rank=lora["r"], alpha=lora["alpha"], dropout=lora["dropout"],
        targets=list(lora["target_modules"]),
    )  # fmt: skip
    if init_from.startswith("hf:"):  # what adapter_config.json names as the base
        config.base_model_name_or_path = str(Path(init_from[3:]).expanduser().resolve())
    from peft import get_peft_model, set_peft_model_state_dict

    with hf_model.peft_quietly():
        model = get_peft_model(base, config)
    prefixed = {f"base_model.model.{k}": v for k, v in state.items()}  # PeftModel's names
    loaded: Any = set_peft_model_state_dict(model, prefixed)
    lost = [k for k in loaded.missing_keys if "lora_" in k] + list(loaded.unexpected_keys)
    if lost:
        raise CheckpointError(
            f"The adapters in {checkpoint} do not fit the model of its run ({lost[0]}): "
            "export a checkpoint this run wrote."
        )
    return model.to(torch.float32).eval()


def write_lm_run(
    directory: Path, src: Source, tokenizer: Tokenizer, fmt: str, dtype: str, adapter_only: bool
) -> None:
    """An lm run of a Hugging Face model, merged or as its adapter."""
    from mlharness.lm.export_weights import model_name
    from mlharness.lm.tokenizers import HFTokenizer

    if not isinstance(tokenizer, HFTokenizer):  # the trainer's vocabulary check prevents it
        raise CheckpointError(
            f"The run {src.run_dir} trained a Hugging Face model on data prepared with "
            "another tokenizer: prepare its data with the model's own (hf:PATH)."
        )
    model = lm_run_model(src.checkpoint, src.meta)
    if adapter_only:
        write_adapter(directory, model, tokenizer)
    else:
        write_model(directory, model, tokenizer, fmt, dtype, model_name(src.run_dir))


# ----------------------------------------------------------------------------- writing


def write_model(
    directory: Path, model: Any, tokenizer: HFTokenizer, fmt: str, dtype: str, name: str
) -> None:
    """``model`` (any PEFT adapters merged) as ``fmt``: save_pretrained, or GGUF for GPT-2."""
    import torch

    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if fmt == "gguf":
        write_gpt2_gguf(directory, model, tokenizer, dtype, name)
        return
    model.to(getattr(torch, dtype))
    model.save_pretrained(str(directory))
    tokenizer.tokenizer.save_pretrained(str(directory))


def write_adapter(directory: Path, model: Any, tokenizer: HFTokenizer) -> None:
    """PEFT's adapter directory (adapter_config.json, adapter_model.safetensors) and the
    tokenizer, which ``PeftModel.from_pretrained(base, directory)`` loads."""
    model.save_pretrained(str(directory))
    tokenizer.tokenizer.save_pretrained(str(directory))


def write_gpt2_gguf(
    directory: Path, model: Any, tokenizer: HFTokenizer, dtype: str, name: str
) -> None:
    """A Hugging Face GPT-2 through our GPT's GGUF writer: the same tensors, renamed."""
    from mlharness.lm.export_gguf import write_gguf

    cfg = model.config
    check_gguf_layout(cfg.to_dict())
    args = {
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_embd": cfg.n_embd,
        "block_size": cfg.n_positions,
        "vocab_size": cfg.vocab_size,
        "layer_norm_eps": cfg.layer_norm_epsilon,
    }
    write_gguf(directory, gpt_names(model.state_dict(), args), args, tokenizer, dtype, name)


def gpt_names(state: Mapping[str, torch.Tensor], args: Mapping[str, Any]) -> dict[str, Any]:
    """GPT-2's tensors under our GPT's names and layout: ``transformer.`` dropped, Conv1D
    weights transposed back to nn.Linear's (out, in); ``lm_head`` is tied to ``wte``."""
    from mlharness.lm.export_weights import full_state, is_linear

    ours = {}
    for key, tensor in state.items():
        if not key.startswith("transformer.") or key.endswith(GPT2_BUFFERS):
            continue
        name = key.removeprefix("transformer.")
        ours[name] = tensor.t() if is_linear(name) else tensor
    return full_state(ours, dict(args))
