"""The policy GRPO trains: our GPT (an ``mlx train`` run or checkpoint) or a local Hugging Face
causal LM, optionally with LoRA adapters (PEFT), behind one small interface.

Both kinds answer the same three questions the trainer asks: the logits of whole sequences
(training forward), a cached one-token-at-a-time step (rollouts), and text <-> token ids.
Everything is loaded from local files; a path that holds no model is an error before
anything heavy is imported.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from mlharness.errors import CheckpointError, ConfigError, ModelError
from mlharness.lm.hf_model import (
    HFModel,
    build_model,
    default_lora_targets,
    has_lora,
    hf_cache_kwarg,
    load_hf_model,
    load_hf_tokenizer,
    load_model_state,
    lora_config,
    set_dropout,
)
from mlharness.lm.hf_model import peft_quietly as _peft_quietly
from mlharness.lm.model import (
    GPT,
    BlockWeights,
    GPTConfig,
    KVCache,
    PlainWeights,
    int8_weights,
    packed_weights,
    plain_decode_step,
    plain_module,
)
from mlharness.lm.sampler import load_model
from mlharness.lm.tokenizers import HFTokenizer, Tokenizer, load_tokenizer
from mlharness.runs import checkpoints as run_ckpt

log = logging.getLogger(__name__)

Kind = Literal["gpt", "hf"]
Step = Callable[[Tensor], Tensor]  # tokens (B, T) continuing the cache -> last logits (B, V)

HF_DIR = "hf"  # inside an rl checkpoint: a save_pretrained directory (weights or adapter)
_LAYER = re.compile(r"(?:^|\.)(?:h|layers|layer|blocks|block)\.(\d+)\.")


# ----------------------------------------------------------------------------- tokenizers


class PolicyTokenizer:
    """Text <-> ids for a policy, with its stop sequences and optional chat template."""

    def __init__(
        self,
        encode: Callable[[str], list[int]],
        decode: Callable[[Sequence[int]], str],
        *,
        vocab_size: int,
        eos_ids: Sequence[int] = (),
        pad_id: int = 0,
        chat: Callable[[str, str | None], str] | None = None,
        use_chat_template: bool | None = None,
    ) -> None:
        self._encode, self._decode = encode, decode
        self.vocab_size = vocab_size
        self.eos_ids = list(eos_ids)
        self.pad_id = pad_id
        self._chat = chat
        self.uses_chat_template = chat is not None and use_chat_template is not False
        if use_chat_template and chat is None:
            raise ConfigError(
                "data.use_chat_template is true but the policy's tokenizer has no chat "
                "template. Set it to false, or use a model whose tokenizer has one."
            )

    def encode(self, text: str) -> list[int]:
        return self._encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self._decode(list(ids))

    def format_prompt(self, prompt: str, system: str | None) -> str:
        """The chat template with the system prompt when in use; the bare prompt otherwise."""
        if self.uses_chat_template and self._chat is not None:
            return self._chat(prompt, system)
        return prompt

    def stop_sequences(self, stop: Sequence[str] | None) -> list[list[int]]:
        """Stop texts as id sequences; default: EOS ids, else a newline when it is one token."""
        if stop is not None:
            seqs = [self.encode(s) for s in stop if s]
            return [s for s in seqs if s]
        if self.eos_ids:
            return [[i] for i in self.eos_ids]
        try:
            newline = self.encode("\n")
        except (KeyError, ValueError):  # a char vocabulary without a newline
            return []
        return [newline] if newline else []


def _lm_tokenizer(tok: Tokenizer, use_chat_template: bool | None) -> PolicyTokenizer:
    def encode(text: str) -> list[int]:
        try:
            return list(tok.encode(text))
        except ValueError as exc:
            raise ModelError(f"The policy's tokenizer cannot encode {text[:40]!r}: {exc}") from exc

    return PolicyTokenizer(
        encode, tok.decode, vocab_size=tok.vocab_size, use_chat_template=use_chat_template
    )


def _hf_tokenizer(tok: Any, vocab_size: int, use_chat_template: bool | None) -> PolicyTokenizer:
    chat: Callable[[str, str | None], str] | None = None
    if getattr(tok, "chat_template", None):

        def chat_text(prompt: str, system: str | None) -> str:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}
            ]
            text: str = tok.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            return text

        chat = chat_text

    eos = tok.eos_token_id
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    pad = tok.pad_token_id if tok.pad_token_id is not None else (eos_ids[0] if eos_ids else 0)
    return PolicyTokenizer(
        lambda text: list(tok.encode(text, add_special_tokens=False)),
        lambda ids: tok.decode(ids, skip_special_tokens=False),
        vocab_size=vocab_size,
        eos_ids=eos_ids,
        pad_id=int(pad),
        chat=chat,
        use_chat_template=use_chat_template,
    )


# ----------------------------------------------------------------------------- the policy


@dataclass
class Policy:
    """A trainable causal LM and its tokenizer; ``model`` may be wrapped by PEFT."""

    kind: Kind
    model: nn.Module
    tokenizer: PolicyTokenizer
    source: Path
    context_len: int | None
    info: dict[str, Any] = field(default_factory=dict)  # what a checkpoint must record
    # The rollouts' decode weights (see _rollout_weights), the parameter versions they were
    # made from and whether they are int8.
    _rollout: tuple[tuple[Any, ...], PlainWeights | None] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def uses_lora(self) -> bool:
        return bool(self.info.get("lora"))

    @property
    def core(self) -> nn.Module:
        """The model under any PEFT wrapper (LoRA layers stay inside it)."""
        model: Any = self.model
        if self.uses_lora:
            model = model.base_model.model
        core: nn.Module = model
        return core

    def logits(self, ids: Tensor) -> Tensor:
        """Logits (B, T, V) of every position; rows may be right-padded (causal: harmless).

        A forward with gradients is the training pass: the rollouts' decode weights go
        first, so that they do not add to its peak memory (the optimizer step that follows
        changes the parameters they were made from anyway).
        """
        if torch.is_grad_enabled():
            self._rollout = None
        if self.kind == "gpt":
            out: Tensor = self.core(ids, all_logits=True)[0]
            return out
        result: Tensor = self.model(input_ids=ids, use_cache=False).logits
        return result

    def decoder(self, batch_size: int, int8: bool = False) -> Step:
        """A fresh KV cache and a step function over it, for rollouts.

        Our GPT and GPT-2 run the plain-tensor decode step (lm.model.plain_decode_step) on
        the weights of :meth:`_rollout_weights`; other models decode through HF's forward.
        """
        weights = self._rollout_weights(batch_size, int8)
        if self.kind == "gpt":
            core = self.core
            assert isinstance(core, GPT)
            return core.decoder(batch_size, weights)[1]
        if weights is not None:
            return _gpt2_step(self.core.config, weights, batch_size)
        from transformers import DynamicCache

        cache = DynamicCache()
        model = self.model
        cache_kwarg = hf_cache_kwarg()

        def step(ids: Tensor) -> Tensor:
            out = model(input_ids=ids, use_cache=True, **{cache_kwarg: cache})
            logits: Tensor = out.logits[:, -1, :]
            return logits

        return step

    def _rollout_weights(self, rows: int, int8: bool) -> PlainWeights | None:
        """The plain decode weights, made once per set of parameters (the optimizer step
        changes them); None: decode through the model's forward.

        With LoRA the adapters are folded in, W + B A * scaling, so a LoRA rollout costs
        what a full fine-tuning one does. Then the weights are reordered for oneDNN (large
        models: lm.model.packed_weights) or, with ``int8`` (generation.int8_rollouts),
        quantised; a policy with no plain path refuses int8 with a ConfigError.
        """
        key = (_weights_key(self.core), int8)
        if self._rollout is not None and self._rollout[0] == key:
            return self._rollout[1]
        self._rollout = None
        core: Any = self.core
        with torch.no_grad():
            if self.uses_lora:
                weights = _fold_lora(core, self.kind)
            elif self.kind == "gpt":
                plain = all(plain_module(m) for m in core.modules())
                weights = core.plain_weights() if plain else None
            else:
                weights = _gpt2_weights(core, None) if _plain_gpt2(core) else None
            if int8 and (weights is None or weights.wte.device.type != "cpu"):
                raise ConfigError(
                    "generation.int8_rollouts needs our GPT or a GPT-2 (LoRA: plain adapters) "
                    "on the CPU, which this policy is not: set it to false."
                )
            if weights is not None:
                weights = int8_weights(weights) if int8 else packed_weights(weights, rows)
        self._rollout = (key, weights)
        return weights

    @contextlib.contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        """The base model without LoRA: the reference, with no second copy in memory."""
        with self.model.disable_adapter():  # type: ignore[operator]
            yield

    def layer_of(self) -> dict[str, int | None]:
        """Each trainable parameter's transformer-layer index (None: embeddings, head, ...)."""
        out: dict[str, int | None] = {}
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                m = _LAYER.search(name)
                out[name] = int(m.group(1)) if m else None
        return out

    def num_layers(self) -> int:
        found = [
            int(m.group(1)) for n, _ in self.model.named_parameters() if (m := _LAYER.search(n))
        ]
        return max(found) + 1 if found else 0


def _plain_gpt2(model: Any) -> bool:
    """Whether ``model`` is a GPT-2 that :func:`plain_decode_step` computes exactly: its
    activation and attention scaling, and no forward hooks (they change what it computes)."""
    cfg: Any = getattr(model, "config", None)
    return not (
        getattr(cfg, "model_type", None) != "gpt2"
        or cfg.activation_function not in ("gelu_new", "gelu_pytorch_tanh")
        or not cfg.scale_attn_weights
        or cfg.scale_attn_by_inverse_layer_idx
        or cfg.reorder_and_upcast_attn
        or getattr(model, "_forward_hooks", None)
    )


def _gpt2_weights(model: Any, weight: Callable[[nn.Module], Tensor] | None) -> PlainWeights:
    """A Hugging Face GPT-2's parameters for our GPT's plain decode path.

    Why: at rollout sizes a one-token forward through HF's modules is mostly Python and
    dispatch overhead (3.3 ms at batch 8 for a 4-layer, 128-wide model here, against 1.6 ms
    for this path; see bench/grpo.py). GPT-2 is our GPT with biases and a tanh GELU, and its
    Conv1D weights are (in, out) already, so :func:`plain_decode_step` runs it on HF's own
    parameters, no copy. ``weight`` gives a layer's weight as its forward applies it (LoRA
    folded in, see :func:`_fold_lora`).
    """
    cfg, tr = model.config, model.transformer

    def w(layer: Any) -> Tensor:
        return layer.weight if weight is None else weight(layer)

    return PlainWeights(
        wte=tr.wte.weight,
        wpe=tr.wpe.weight,
        ln_f_weight=tr.ln_f.weight,
        ln_f_bias=tr.ln_f.bias,
        head_t=w(model.lm_head).detach().t().contiguous(),  # (C, V), see PlainWeights
        blocks=[
            BlockWeights(
                b.ln_1.weight,
                b.ln_1.bias,
                w(b.attn.c_attn),
                b.attn.c_attn.bias,
                w(b.attn.c_proj),
                b.attn.c_proj.bias,
                b.ln_2.weight,
                b.ln_2.bias,
                w(b.mlp.c_fc),
                b.mlp.c_fc.bias,
                w(b.mlp.c_proj),
                b.mlp.c_proj.bias,
            )
            for b in tr.h
        ],
        n_head=cfg.n_head,
        eps=cfg.layer_norm_epsilon,
        gelu="tanh",
    )


def _gpt2_step(cfg: Any, weights: PlainWeights, batch_size: int) -> Step:
    shape = GPTConfig(
        block_size=cfg.n_positions,
        vocab_size=cfg.vocab_size,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_embd=cfg.n_embd,
        bias=True,
    )
    cache = KVCache(shape, batch_size, device=weights.wte.device, dtype=weights.wte.dtype)
    return lambda idx: plain_decode_step(idx, cache, weights)


def _fold_lora(core: nn.Module, kind: Kind) -> PlainWeights | None:
    """Decode weights of a LoRA model with each adapted Linear's W + B A * scaling.

    None (rollouts then go through the model's forward) unless every LoRA layer is a plain
    Linear adapter (no DoRA, no LoRA bias) that the plain path reads, and the rest of the
    model is what it computes: our GPT's own layers, or a GPT-2 it models exactly.
    """
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.tuners_utils import BaseTunerLayer

    tuners: list[Any] = [m for m in core.modules() if isinstance(m, BaseTunerLayer)]
    for m in tuners:
        names = [a for a in m.active_adapters if a in m.lora_A]
        if type(m) is not LoraLinear or m._forward_hooks or m._forward_pre_hooks:
            return None
        if any(m.use_dora.get(a) or m.lora_bias.get(a) for a in names):
            return None
    inside = {id(sub) for m in tuners for sub in m.modules()}
    if kind == "gpt":
        if not all(plain_module(m) or id(m) in inside for m in core.modules()):
            return None
    elif not _plain_gpt2(core):
        return None
    read: set[int] = set()

    def folded(layer: Any) -> Tensor:
        if not isinstance(layer, LoraLinear):
            return layer.weight  # type: ignore[no-any-return]
        read.add(id(layer))
        base: Any = layer.get_base_layer()
        w: Tensor = base.weight
        if layer.merged or layer.disable_adapters:
            return w
        for name in layer.active_adapters:
            if name in layer.lora_A:
                w = w + layer.get_delta_weight(name)  # Conv1D's transpose included
        return w

    with torch.no_grad():
        if isinstance(core, GPT):
            weights = core.plain_weights(folded)
        else:
            weights = _gpt2_weights(core, folded)
    return weights if read == {id(m) for m in tuners} else None


def _weights_key(core: nn.Module) -> tuple[Any, ...]:
    """Changes whenever a parameter is replaced or updated in place (the optimizer step,
    a checkpoint load), or adapters are switched: when folded weights are stale."""
    lora: list[Any] = [m for m in core.modules() if hasattr(m, "lora_A")]
    flags = [(m.disable_adapters, m.merged, tuple(m.active_adapters)) for m in lora]
    params = [(p.data_ptr(), p._version) for p in core.parameters()]
    return (tuple(flags), tuple(params))


# ----------------------------------------------------------------------------- loading


def describe(path: Path, prefer: str = "best") -> tuple[Kind, Path]:
    """What ``path`` holds: (``gpt``, checkpoint dir) or (``hf``, model dir); else an error.

    Runs before anything heavy is imported, so a wrong path fails in milliseconds.
    """
    if not path.exists():
        raise ConfigError(
            f"model.model_path {path} does not exist. Point it at an `mlx train` run "
            "directory, one of its checkpoints, or a local Hugging Face model directory."
        )
    if (path / run_ckpt.META_FILE).is_file():
        meta = _read_json(path / run_ckpt.META_FILE)
        if meta.get("model_type") == "hf":
            return "hf", path / HF_DIR
        return "gpt", path
    if (path / "config.json").is_file() and not (path / "summary.json").is_file():
        return "hf", path
    if (path / "checkpoints").is_dir():
        last = run_ckpt.list_checkpoints(path / "checkpoints", "last")
        if prefer == "last" and last:
            return describe(last[-1].path)
        return describe(run_ckpt.pick_for_sampling(path / "checkpoints").path)
    runs = sorted(
        p for p in path.iterdir() if p.is_dir() and run_ckpt.list_checkpoints(p / "checkpoints")
    )
    if runs:  # an experiment's directory of runs: its newest run
        return describe(runs[-1], prefer)
    raise ConfigError(
        f"{path} holds no model: no checkpoint.json (an mlx checkpoint), no config.json (a "
        "Hugging Face model), no checkpoints/ directory (an mlx run) and no runs with "
        "checkpoints (an experiment's directory). Point model.model_path at one of those."
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"Cannot read {path}: {exc}.") from exc
    return data if isinstance(data, dict) else {}


def _gpt_tokenizer_dir(checkpoint: Path) -> Path:
    """An rl checkpoint keeps meta.json itself; an lm checkpoint's sits in its run directory."""
    for candidate in (checkpoint, checkpoint.parent.parent):
        if (candidate / "meta.json").is_file():
            return candidate
    raise CheckpointError(
        f"No meta.json next to {checkpoint} or in its run directory, so its tokenizer is "
        "unknown. Copy the meta.json of the data it was trained on into the run directory."
    )


def load_policy(
    path: Path,
    *,
    device: torch.device,
    use_chat_template: bool | None = None,
    trainable: bool = True,
    prefer: str = "best",
) -> Policy:
    """Load a GPT checkpoint/run or a local Hugging Face model (and any LoRA adapter in it).

    An lm run that fine-tuned a Hugging Face model (``init_from = "hf:PATH"``, the SFT step
    before GRPO) loads as a Hugging Face policy: see :func:`_load_hf_run`.
    """
    kind, where = describe(path, prefer)
    if kind == "gpt":
        gpt, meta = load_model(where, torch.device("cpu"), use_ema=False)
        if isinstance(gpt, HFModel):
            return _ready(_load_hf_run(gpt, meta, where, device, use_chat_template), trainable)
        model: nn.Module = gpt
        disable_dropout(model)
        tok_dir = _gpt_tokenizer_dir(where)
        tokenizer = _lm_tokenizer(load_tokenizer(tok_dir), use_chat_template)
        info: dict[str, Any] = {
            "model_type": "gpt",
            "model_args": meta["model_args"],
            "tokenizer_dir": str(tok_dir),
        }
        policy = Policy(
            "gpt", model.to(device), tokenizer, where, int(meta["model_args"]["block_size"]), info
        )
    else:
        policy = _load_hf(where, device, use_chat_template)
    return _ready(policy, trainable)


def _ready(policy: Policy, trainable: bool) -> Policy:
    policy.model.train(trainable)
    policy.model.requires_grad_(trainable)
    return policy


def disable_dropout(model: nn.Module) -> None:
    """Turn off the model's dropout (not LoRA's, added later), as TRL's disable_dropout does.

    Rollouts are sampled in eval mode; with dropout on in the training forward, the
    importance ratio and the KL to the reference would start away from 1 and 0 by noise
    alone, before any update. GPT-2 style configs ship with 0.1 dropout everywhere.
    """
    set_dropout(model, 0.0)


def _load_hf_run(
    run_model: HFModel,
    meta: dict[str, Any],
    checkpoint: Path,
    device: torch.device,
    use_chat_template: bool | None,
) -> Policy:
    """A Hugging Face policy from an lm checkpoint: the fine-tuned weights (a LoRA run's
    adapters merged, as ``mlx export`` merges them), the run's tokenizer and chat template.

    The model's ``name_or_path`` is the checkpoint, so GRPO's LoRA adapters saved from it
    name the checkpoint as their base, and :func:`_load_hf` finds it there again.
    """
    if has_lora(run_model):
        from mlharness.lm.export_weights import merged_state

        plain = build_model({k: v for k, v in meta["model_args"].items() if k != "lora"})
        load_model_state(plain, merged_state(run_model.hf))
        assert isinstance(plain, HFModel)
        run_model = plain
    model: Any = run_model.hf
    model.config._name_or_path = str(checkpoint)
    model.name_or_path = str(checkpoint)
    disable_dropout(model)
    tok_dir = _gpt_tokenizer_dir(checkpoint)
    tok = load_tokenizer(tok_dir)
    if not isinstance(tok, HFTokenizer):
        raise CheckpointError(
            f"The run of {checkpoint} fine-tuned a Hugging Face model on data prepared with "
            'another tokenizer: prepare its data with prepare.tokenizer = "hf:PATH".'
        )
    vocab = int(model.get_output_embeddings().weight.shape[0])
    info = {"model_type": "hf", "base_path": str(checkpoint), "hf_tokenizer": tok.tokenizer}
    tokenizer = _hf_tokenizer(tok.tokenizer, vocab, use_chat_template)
    return Policy("hf", model.to(device), tokenizer, checkpoint, _context(model), info)


def _context(model: Any) -> int | None:
    ctx = getattr(model.config, "max_position_embeddings", None) or getattr(
        model.config, "n_positions", None
    )
    return int(ctx) if ctx else None


def _with_adapter(policy: Policy, path: Path) -> Policy:
    """``policy`` with the PEFT adapter saved in ``path`` on it, trainable."""
    from peft import PeftModel

    with _peft_quietly():
        policy.model = PeftModel.from_pretrained(policy.model, str(path), is_trainable=True)
    policy.info["lora"] = True
    policy.source = path
    return policy


def _load_hf(path: Path, device: torch.device, use_chat_template: bool | None) -> Policy:
    adapter = (path / "adapter_config.json").is_file()
    base_path = path
    if adapter:
        base_path = Path(
            _read_json(path / "adapter_config.json").get("base_model_name_or_path", "")
        )
    if (base_path / run_ckpt.META_FILE).is_file():  # GRPO's adapters on an lm run's model
        base = load_policy(base_path, device=device, use_chat_template=use_chat_template)
        return _with_adapter(base, path)
    tok = load_hf_tokenizer(path if (path / "tokenizer_config.json").is_file() else base_path)
    model: Any = load_hf_model(base_path)
    disable_dropout(model)
    info: dict[str, Any] = {"model_type": "hf", "base_path": str(base_path), "hf_tokenizer": tok}
    vocab = int(model.get_output_embeddings().weight.shape[0])
    tokenizer = _hf_tokenizer(tok, vocab, use_chat_template)
    policy = Policy("hf", model.to(device), tokenizer, path, _context(model), info)
    return _with_adapter(policy, path) if adapter else policy


def add_lora(
    policy: Policy, *, rank: int, alpha: float, dropout: float, targets: list[str] | None
) -> Policy:
    """Wrap the policy's model with fresh LoRA adapters; only they train."""
    if policy.uses_lora:
        return policy  # a checkpoint that already carries adapters: keep training them
    if targets is None:
        targets = default_lora_targets(policy.model, "model.lora_target_modules")
    config = lora_config(policy.model, rank=rank, alpha=alpha, dropout=dropout, targets=targets)
    from peft import get_peft_model

    try:
        with _peft_quietly():
            model = get_peft_model(policy.model, config)
    except ValueError as exc:
        raise ConfigError(
            f"LoRA cannot adapt model.lora_target_modules {targets}: {exc}. Name Linear "
            "modules of the model, e.g. q_proj, v_proj."
        ) from exc
    policy.model = model
    policy.info["lora"] = {"rank": rank, "alpha": alpha, "dropout": dropout, "targets": targets}
    return policy


def frozen_copy(policy: Policy) -> Policy:
    """A frozen deep copy: the reference model when no other is given and LoRA is off."""
    model = copy.deepcopy(policy.model).eval().requires_grad_(False)
    return Policy(
        policy.kind, model, policy.tokenizer, policy.source, policy.context_len, dict(policy.info)
    )


# ----------------------------------------------------------------------------- saving


def policy_state(policy: Policy) -> dict[str, Tensor]:
    """What a checkpoint stores to restore training: all weights, or only the adapters."""
    if policy.uses_lora:
        from peft import get_peft_model_state_dict

        state: dict[str, Tensor] = get_peft_model_state_dict(
            policy.model, save_embedding_layers=False
        )
        return state
    return policy.model.state_dict()


def load_policy_state(policy: Policy, state: dict[str, Tensor]) -> None:
    if policy.uses_lora:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(policy.model, state)
        return
    if policy.kind == "gpt":
        run_ckpt.load_into(policy.model, state)
    else:
        policy.model.load_state_dict(state, strict=False)


def export_plain_state(policy: Policy) -> dict[str, Tensor]:
    """GPT weights with LoRA merged and PEFT's wrapper names removed (lm's checkpoint format)."""
    from mlharness.lm.export_weights import merged_state

    return merged_state(policy.core)
