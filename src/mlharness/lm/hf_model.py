"""Hugging Face causal LMs and LoRA adapters for the lm trainer (and GRPO's policy).

The trainer was written for our :class:`~mlharness.lm.model.GPT`: ``model(idx, targets)``
gives ``(logits, loss)``, ``optimizer_groups`` gives AdamW's groups, ``generate`` samples.
:class:`HFModel` keeps that contract around a ``transformers`` causal LM, so fine-tuning a
pretrained model is the same loop, schedule, checkpoints and resume as training from
scratch: not a second trainer, a model that comes from elsewhere.

A run's ``model_args`` describe either model: our GPT's fields, plus for a Hugging Face
model its whole ``config.json`` (``hf_config``), so a checkpoint rebuilds the architecture
without the source directory; plus ``lora`` when the run trains LoRA adapters (PEFT's
layers injected into the model in place; checkpoints then hold only the adapters).

Loading helpers shared with ``rl.policy`` live here because rl builds on lm, never the
reverse. transformers and peft are imported only when a model needs them.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mlharness.errors import CheckpointError, ConfigError, ModelError
from mlharness.lm.model import GPT, GPTConfig, sample_next_token
from mlharness.runs import checkpoints as run_ckpt

GPT_LORA_TARGETS = ["c_attn", "c_proj", "c_fc"]  # our GPT's and GPT-2's Linear/Conv1D layers
LLAMA_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_GPT_FIELDS = tuple(f.name for f in fields(GPTConfig))
_HF_INSTALL = 'pip install "mlharness[hf]"'


# ----------------------------------------------------------------------------- loading


def _transformers(path: Path) -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise ModelError(
            f"{path} is a Hugging Face model, which needs transformers: {_HF_INSTALL}."
        ) from exc
    return transformers


def _cannot_load(path: Path, exc: Exception) -> ModelError:
    return ModelError(
        f"Cannot load a Hugging Face causal LM from {path}: {exc}. It must hold config.json, "
        "the weights and the tokenizer files (save_pretrained writes them)."
    )


def load_hf_model(path: Path) -> Any:
    """``AutoModelForCausalLM.from_pretrained(path)``, local files only, in float32.

    Without transformers' "Loading weights" bar: a local load takes moments, and the bar
    would stand before any error message on stderr.
    """
    transformers = _transformers(path)
    hf_logging = transformers.utils.logging
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, dtype=torch.float32
        )
    except (OSError, ValueError) as exc:  # no config.json / weights; not a causal LM
        raise _cannot_load(path, exc) from exc
    finally:
        if bar:
            hf_logging.enable_progress_bar()


def load_hf_tokenizer(path: Path) -> Any:
    transformers = _transformers(path)
    try:
        return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise _cannot_load(path, exc) from exc


def hf_cache_kwarg() -> str:
    """The keyword a Hugging Face model's forward takes its KV cache by.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns, and
    goes in 5.40); older releases know only ``past_key_values``.
    """
    from packaging.version import Version
    from transformers import __version__

    return "cache" if Version(__version__).release >= (5, 24) else "past_key_values"


def set_dropout(model: nn.Module, p: float) -> None:
    """Give every dropout of ``model`` the rate ``p`` (0: off, as TRL's disable_dropout).

    Hugging Face configs ship their own rates (GPT-2: 0.1 everywhere); a fine-tuning run
    uses ``model.dropout`` instead, one knob with one meaning for every model.
    """
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        for name in ("dropout", "attention_dropout"):  # rates read as floats in forward()
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, p)


# ----------------------------------------------------------------------------- the wrapper


class HFModel(nn.Module):
    """A ``transformers`` causal LM with our GPT's training and sampling contract.

    ``config`` is our GPT's record of the shape (for code that reads ``config.block_size``);
    its block_size is the training window, at most the model's context length. The model
    itself is not changed (rotary or learned positions alike).
    """

    def __init__(self, hf: nn.Module, config: GPTConfig) -> None:
        super().__init__()
        self.hf = hf
        self.config = config

    def forward(
        self, idx: Tensor, targets: Tensor | None = None, *, all_logits: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """As :meth:`GPT.forward`: all logits with targets or ``all_logits``, else the last."""
        logits: Tensor = self.hf(input_ids=idx, use_cache=False).logits  # (B, T, V)
        if targets is None:
            return (logits if all_logits else logits[:, -1:, :]), None
        loss = F.cross_entropy(
            logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1
        )
        return logits, loss

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """As our GPT's: decay the trainable matrices, not biases, norms or 1-D gains."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]

    @torch.inference_mode()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        on_token: Callable[[Tensor], None] | None = None,
    ) -> Tensor:
        """Continue ``idx`` (B, T) as :meth:`GPT.generate` does, with the model's KV cache.

        A full window (block_size) starts the cache anew from the last block_size // 2
        tokens, as our GPT's context shift does.
        """
        was_training = self.training
        self.eval()
        try:
            seq = idx
            step = self._decoder()
            logits = step(seq[:, -self.config.block_size :], True)
            for n in range(max_new_tokens):
                token = sample_next_token(logits, temperature, top_k, top_p, generator)
                seq = torch.cat([seq, token[:, None]], dim=1)
                if on_token is not None:
                    on_token(token)
                if n + 1 < max_new_tokens:
                    full = step.length >= self.config.block_size  # type: ignore[attr-defined]
                    context = seq[:, -(self.config.block_size // 2) :] if full else token[:, None]
                    logits = step(context, full)
        finally:
            self.train(was_training)
        return seq.clone()

    def _decoder(self) -> Callable[[Tensor, bool], Tensor]:
        """A step function over a KV cache: (tokens, start anew) -> last logits (B, V)."""
        from transformers import DynamicCache

        keyword = hf_cache_kwarg()
        state: dict[str, Any] = {}

        def step(ids: Tensor, fresh: bool) -> Tensor:
            if fresh:
                state["cache"] = DynamicCache()
            out = self.hf(input_ids=ids, use_cache=True, **{keyword: state["cache"]})
            step.length = state["cache"].get_seq_length()  # type: ignore[attr-defined]
            logits: Tensor = out.logits[:, -1, :]
            return logits

        return step


def hf_model_args(model: Any, path: Path) -> dict[str, Any]:
    """A Hugging Face model's ``model_args``: our fields (for reading) and its config.json."""
    cfg: Any = model.config
    context = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    if not context:
        raise ModelError(
            f"The config.json of {path} gives no context length (max_position_embeddings or "
            "n_positions), so the training window cannot be checked against it."
        )
    embeddings: Any = model.get_input_embeddings()
    return {
        "n_layer": int(cfg.num_hidden_layers),
        "n_head": int(cfg.num_attention_heads),
        "n_embd": int(cfg.hidden_size),
        "block_size": int(context),
        "bias": any(n.endswith(".bias") for n, _ in model.named_parameters()),
        "vocab_size": int(embeddings.weight.shape[0]),
        "dropout": 0.0,
        "hf_config": json.loads(cfg.to_json_string(use_diff=False)),
    }


def build_model(args: Mapping[str, Any]) -> GPT | HFModel:
    """The architecture ``args`` describe, with fresh weights and no LoRA layers."""
    if "hf_config" not in args:
        return GPT(GPTConfig(**{k: args[k] for k in _GPT_FIELDS}))
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_config = dict(args["hf_config"])
    config = AutoConfig.for_model(hf_config.pop("model_type"), **hf_config)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    set_dropout(model, float(args["dropout"]))
    fuse_tanh_gelu(model)
    return HFModel(model, GPTConfig(**{k: args[k] for k in _GPT_FIELDS}))


def fuse_tanh_gelu(model: nn.Module) -> None:
    """Run GPT-2's tanh GELU (``gelu_new``) as PyTorch's fused kernel, ``GELUTanh``.

    transformers writes ``gelu_new`` as seven elementwise ops whose intermediates autograd
    keeps: for LoRA on GPT-2 small at 8 x 256 tokens on a CPU, about 0.2 s of a 9 s step and
    1.4 GB of peak memory (bench/finetune.py). transformers' ``GELUTanh`` is the same function
    (float32 results within 2.4e-7); the config still says ``gelu_new``: exports are unchanged.
    """
    from transformers.activations import GELUTanh, NewGELUActivation

    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, NewGELUActivation):
                setattr(module, name, GELUTanh())


def core(model: nn.Module) -> nn.Module:
    """The module that holds the weights (and any LoRA layers): under HFModel, the HF model."""
    return model.hf if isinstance(model, HFModel) else model


def has_lora(model: nn.Module) -> bool:
    return any("lora_A" in name for name, _ in model.named_parameters())


def model_state(model: nn.Module) -> dict[str, Tensor]:
    """What a checkpoint keeps: the adapters of a LoRA model, else every weight (a Hugging
    Face model's under its own names, so the file reads like its model.safetensors)."""
    if has_lora(model):
        from peft import get_peft_model_state_dict

        state: dict[str, Tensor] = get_peft_model_state_dict(core(model))
        return state
    return core(model).state_dict()


def load_model_state(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load :func:`model_state`'s dict; anything that does not fit is a CheckpointError."""
    if not has_lora(model):
        run_ckpt.load_into(core(model), state)
        return
    from peft import set_peft_model_state_dict

    if not all("lora_" in key for key in state):
        raise CheckpointError(
            "The checkpoint holds whole-model weights, but this run trains LoRA adapters: "
            "resume it with the [lora] it was started with, or start with --fresh."
        )
    result = set_peft_model_state_dict(core(model), state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise CheckpointError(
            f"The checkpoint holds adapters this model does not have: {', '.join(unexpected[:5])}."
        )


# ----------------------------------------------------------------------------- LoRA


@contextlib.contextmanager
def peft_quietly() -> Iterator[None]:
    """PEFT still asks transformers for ``is_gradient_checkpointing``, which transformers 5
    deprecates with a FutureWarning on every wrap: PEFT's to fix, nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
        )
        yield


def default_lora_targets(model: nn.Module, setting: str) -> list[str]:
    """The layers LoRA adapts by default: attention and MLP projections of each layout."""
    if isinstance(model, GPT):
        return list(GPT_LORA_TARGETS)
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    llama = [n for n in LLAMA_LORA_TARGETS if n in names]
    if llama:
        return llama
    conv1d = {
        n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Conv1D"
    }
    gpt2 = [n for n in GPT_LORA_TARGETS if n in names | conv1d]
    if gpt2:
        return gpt2
    raise ConfigError(
        f"Cannot guess which modules LoRA should adapt in this model: set {setting} "
        '(e.g. ["q_proj", "v_proj"]).'
    )


def lora_config(
    model: nn.Module, *, rank: int, alpha: float, dropout: float, targets: list[str]
) -> Any:
    """PEFT's LoraConfig for ``model``; GPT-2's Conv1D stores weights transposed."""
    try:
        from peft import LoraConfig
    except ImportError as exc:
        raise ModelError(f"LoRA needs peft: {_HF_INSTALL}.") from exc
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # PEFT annotates int, accepts any number
        lora_dropout=dropout,
        target_modules=targets,
        bias="none",
        fan_in_fan_out=getattr(getattr(model, "config", None), "model_type", "") == "gpt2",
    )


def add_lora_layers(model: nn.Module, lora: Mapping[str, Any]) -> list[str]:
    """Inject fresh LoRA adapters into ``model`` in place; only they stay trainable.

    Returns the adapted module names (``lora["target_modules"]`` or the layout's default).
    """
    from peft import inject_adapter_in_model

    inner = core(model)
    targets = list(lora.get("target_modules") or default_lora_targets(inner, "lora.target_modules"))
    config = lora_config(
        inner, rank=lora["r"], alpha=lora["alpha"], dropout=lora["dropout"], targets=targets
    )
    try:
        with peft_quietly():
            inject_adapter_in_model(config, inner)
    except ValueError as exc:
        raise ConfigError(
            f"LoRA cannot adapt lora.target_modules {targets}: {exc}. Name Linear modules "
            "of the model, e.g. q_proj, v_proj."
        ) from exc
    return targets


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute each layer's activations in the backward pass: less memory, ~30% slower.

    Non-reentrant checkpointing, so it works when the inputs need no gradient (LoRA).
    """
    if not isinstance(model, HFModel):
        raise ConfigError(
            "train.gradient_checkpointing is for Hugging Face models (init_from = "
            '"hf:PATH"): set it to false for this GPT.'
        )
    hf: Any = model.hf
    kwargs = {"use_reentrant": False}
    if hasattr(hf, "activation_checkpointing_enable"):  # transformers >= 5.25's name
        hf.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
