"""The GPT of the ``lm`` engine: a GPT-2 style decoder-only transformer, with a KV cache.

Read top to bottom: the config, the key/value cache, attention, the MLP, one block, the
model with its generation loop (and a lean one-token forward for it), and last sampling.
The layout is GPT-2's (pre-LayerNorm blocks, learned absolute positions, a 4x wide GELU
MLP, the output head tied to the token embedding), so with ``bias=True`` a checkpoint maps
parameter for parameter onto Hugging Face's ``GPT2LMHeadModel``: its Conv1D layers store
Linear weights transposed, and ``activation_function="gelu"`` matches our exact GELU
(GPT-2 itself used the tanh approximation, "gelu_new").

Shape comments use B = batch, T = tokens in this forward, C = n_embd, nh = heads,
hs = head size (C // nh), L = keys attended to, V = vocab size.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mlharness.errors import ModelError

# ---------------------------------------------------------------------------- config


@dataclass
class GPTConfig:
    """The model's shape; stored in every checkpoint as its "model args" record."""

    block_size: int = 64  # context length: positions are learned, so also the hard limit
    vocab_size: int = 65
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False  # biases in Linear and LayerNorm layers; GPT-2 has them

    def __post_init__(self) -> None:
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ModelError(f"GPTConfig.{name} must be a positive integer; got {value!r}.")
        if self.n_embd % self.n_head:
            raise ModelError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                "each head gets n_embd // n_head channels."
            )
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ModelError(f"GPTConfig.dropout must be a number in [0, 1); got {self.dropout!r}.")
        if not isinstance(self.bias, bool):
            raise ModelError(f"GPTConfig.bias must be true or false; got {self.bias!r}.")

    def to_dict(self) -> dict[str, Any]:
        """The plain record a checkpoint stores (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GPTConfig:
        """Rebuild from :meth:`to_dict`; unknown keys mean a different model, so refuse them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelError(
                f"Unknown GPTConfig key(s) {', '.join(unknown)}; "
                f"expected only {', '.join(sorted(known))}."
            )
        return cls(**d)


# ---------------------------------------------------------------------------- KV cache


class KVCache:
    """Keys and values of every position seen so far, for one token per forward in sampling.

    The tensors are allocated once at full context length and filled in place, so a decode
    step costs one small copy per layer instead of a ``torch.cat`` that grows each step.
    """

    def __init__(
        self,
        config: GPTConfig,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        head_size = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, config.block_size, head_size)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        # Per-layer views made once: indexing the layer dimension each step costs a dispatch.
        self._k_layers = self.k.unbind(0)  # n_layer x (B, nh, block_size, hs)
        self._v_layers = self.v.unbind(0)
        self.length = 0  # positions filled; also the absolute position of the next token

    def reset(self) -> None:
        """Forget every position (the stale values are overwritten before they are read)."""
        self.length = 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store this forward's ``k, v`` (B, nh, T, hs) after the cached ones; return all of them.

        :meth:`GPT.forward` advances :attr:`length` once every layer has stored its part.
        """
        start, t = self.length, k.size(2)
        self._k_layers[layer].narrow(2, start, t).copy_(k)
        self._v_layers[layer].narrow(2, start, t).copy_(v)
        end = start + t
        return self._k_layers[layer].narrow(2, 0, end), self._v_layers[layer].narrow(2, 0, end)


# ---------------------------------------------------------------------------- layers


_thread = threading.local()  # .generator: where this thread's dropout draws from


@contextmanager
def dropout_generator(generator: torch.Generator) -> Iterator[None]:
    """Within the block, this thread's CPU dropout draws from ``generator``.

    Why: threads that run forwards side by side (``trainer.ThreadShards``) would race for
    the global generator, and the masks would depend on which thread drew first; with one
    seeded generator each, every run draws the same masks.
    """
    previous = getattr(_thread, "generator", None)
    _thread.generator = generator
    try:
        yield
    finally:
        _thread.generator = previous


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Zero each element with probability ``p``, scale the others by 1 / (1 - p): F.dropout.

    Why not F.dropout on the CPU: it draws a Bernoulli variable per element one at a time,
    which took a tenth of a shakespeare_char training step (its T x T attention weights are
    4.7M elements a layer). Here one 64-bit draw of the same global generator gives four
    16-bit uniforms, ~10x faster, and ``p`` is rounded to a multiple of 1/65,536 (0.2 keeps
    a share of 52,429/65,536, 0.0000031 more than 0.8), scaled to match. The mask is
    bytes, not floats, for the backward: a quarter of F.dropout's memory. Inside
    :func:`dropout_generator` the draws come from that generator instead.
    """
    if not training or p == 0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p)
    cut = round(p * 65536)
    bits = torch.empty((x.numel() + 3) // 4, dtype=torch.int64)
    bits.random_(-(2**63), None, generator=getattr(_thread, "generator", None))
    keep = bits.view(torch.int16)[: x.numel()].view(x.shape) >= cut - 32768
    return x * keep * (65536 / (65536 - cut))


class Dropout(nn.Dropout):
    """nn.Dropout through :func:`dropout` (still an nn.Dropout: whatever sets rates finds it)."""

    def forward(self, input: Tensor) -> Tensor:  # nn.Dropout's own parameter name
        return dropout(input, self.p, self.training)


# On the CPU, two batched matmuls beat SDPA's flash kernel for short contexts: forward and
# backward of 12 x 4 heads took 1.64 against 1.84 ms at T=64 and 4.4 against 4.9 ms at 128,
# but 17.3 against 14.6 ms at 256 (torch 2.13, 2 cores), where the T x T weights also grow.
# With dropout the CPU flash kernel is not used at any length: SDPA falls back to its math
# path, which makes more passes over the T x T weights than ours (masking, a "safe"
# softmax's checks), so ours is taken then too: 238 against 353 ms a layer, forward and
# backward, for nanoGPT's shakespeare_char shape (12 x 6 heads, T=256, dropout 0.2; the
# fastest of 6 alternated calls each, on a loaded machine).
SHORT_CONTEXT = 128


def short_causal_attention(q: Tensor, k: Tensor, v: Tensor, dropout_p: float) -> Tensor:
    """Causal attention as softmax(q k^T / sqrt(hs) + mask) v, for short sequences on CPU."""
    B, nh, T, hs = q.shape
    mask = torch.full((T, T), float("-inf"), dtype=q.dtype, device=q.device).triu(1)
    q, k, v = (t.contiguous().view(B * nh, T, hs) for t in (q, k, v))
    att = torch.baddbmm(mask, q, k.transpose(1, 2), alpha=1.0 / math.sqrt(hs)).softmax(-1)
    if dropout_p > 0:
        att = dropout(att, dropout_p)
    return torch.bmm(att, v).view(B, nh, T, hs)


def causal_attention(
    q: Tensor, k: Tensor, v: Tensor, kv_cache: KVCache | None, layer: int, dropout_p: float
) -> Tensor:
    """Each query attends to its own position and the ones before it; (B, nh, T, hs) each.

    With ``kv_cache``, this forward's keys and values are appended to the cached ones of
    ``layer`` first, and the queries sit at positions ``kv_cache.length`` onwards.
    """
    if kv_cache is None:
        if q.device.type == "cpu" and (q.size(2) <= SHORT_CONTEXT or dropout_p > 0):
            return short_causal_attention(q, k, v, dropout_p)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    start, T = kv_cache.length, q.size(2)
    k, v = kv_cache.update(layer, k, v)  # (B, nh, L, hs), L = start + T
    if T == 1:
        # One new query may see every cached position: no mask to build or apply.
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    if start == 0:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    # Queries at start..start+T-1 of L keys. SDPA's is_causal aligns its triangle with the
    # top-left corner, right only when start == 0, so spell the mask out.
    mask = torch.ones(T, start + T, dtype=torch.bool, device=q.device).tril(start)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, all heads' q, k and v from one fused matmul."""

    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx  # which layer of a KVCache is ours
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = Dropout(config.dropout)

    def forward(self, x: Tensor, kv_cache: KVCache | None = None) -> Tensor:
        B, T, C = x.size()
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, nh, T, hs)
        dropout_p = self.dropout if self.training else 0.0
        y = causal_attention(q, k, v, kv_cache, self.layer_idx, dropout_p)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again
        out: Tensor = self.resid_dropout(self.c_proj(y))
        return out


class MLP(nn.Module):
    """Position-wise feed-forward: widen 4x, GELU, project back."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.dropout(self.c_proj(self.gelu(self.c_fc(x))))
        return out


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, kv_cache: KVCache | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache)
        x = x + self.mlp(self.ln_2(x))
        return x


# ---------------------------------------------------------------------------- model


class GPT(nn.Module):
    """Token and position embeddings, ``n_layer`` blocks, a final LayerNorm, a tied head."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        # Parameter names are nanoGPT's without its "transformer." prefix (wte.weight,
        # h.0.attn.c_attn.weight, ...): prepend it to get Hugging Face GPT-2's names.
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying (Press & Wolf, 2017): reading a token in and writing it out share one
        # matrix, which saves vocab_size * n_embd parameters and trains better at this size.
        self.lm_head.weight = self.wte.weight

        self.apply(self._init_weights)
        # GPT-2: each block adds two residual branches, so scale their output projections by
        # 1/sqrt(2 * n_layer) to keep the residual stream's variance from growing with depth.
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        for block in self.h:
            assert isinstance(block, Block)
            nn.init.normal_(block.attn.c_proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.c_proj.weight, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; the tied head counts once.

        ``non_embedding`` leaves out the position embeddings (the convention of the scaling-law
        papers). The token embedding stays in: it is also the output layer's weight.
        """
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a tied one once
        if non_embedding:
            n -= self.wpe.weight.numel()
        return n

    def crop_block_size(self, block_size: int) -> None:
        """Shorten the context to ``block_size`` tokens, keeping the first position embeddings.

        For a model trained with a longer context than a run wants (less memory, faster).
        """
        if not 0 < block_size <= self.config.block_size:
            raise ModelError(
                f"Cannot crop the context to {block_size} tokens: it must be between 1 and the "
                f"model's block_size, {self.config.block_size}."
            )
        self.config = replace(self.config, block_size=block_size)  # the caller's stays as is
        self.wpe.weight = nn.Parameter(self.wpe.weight.detach()[:block_size].clone())
        self.wpe.num_embeddings = block_size

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups: decay the matrices (dim >= 2), not biases or LayerNorm gains.

        Decaying a gain or bias towards zero only fights the normalisation; the matrices are
        where weight decay regularises.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        *,
        kv_cache: KVCache | None = None,
        all_logits: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Logits, and the mean cross-entropy when ``targets`` (B, T) are given.

        With ``targets`` or ``all_logits``: logits (B, T, V) for every position (GRPO needs
        them without targets). Otherwise only the last position's, (B, 1, V), which is all
        generation needs and spares the largest matmul.
        With ``kv_cache``: ``idx`` continues the cached positions (a prompt into an empty
        cache, then one token at a time, or any chunk), and the cache grows by T.
        """
        T = idx.size(1)
        start = 0 if kv_cache is None else kv_cache.length
        if start + T > self.config.block_size:
            where = "" if kv_cache is None else f" after {start} cached positions"
            raise ModelError(
                f"Cannot forward a sequence of {T} tokens{where}: the model's block_size "
                f"(context length) is {self.config.block_size}. Crop the input to the last "
                f"{self.config.block_size - start} tokens."
            )

        tok_emb = self.wte(idx)  # (B, T, C)
        pos_emb = self.wpe.weight[start : start + T]  # (T, C), broadcast over the batch
        x = self.drop(tok_emb + pos_emb)
        for block in self.h:
            x = block(x, kv_cache)
        if kv_cache is not None:
            kv_cache.length += T
        x = self.ln_f(x)

        if targets is None:
            logits: Tensor = self.lm_head(x if all_logits else x[:, -1:, :])  # (B, 1 or T, V)
            return logits, None
        logits = self.lm_head(x)  # (B, T, V)
        loss = F.cross_entropy(
            logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
        )
        return logits, loss

    # ------------------------------------------------------------------------ generation

    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        on_token: Callable[[Tensor], None] | None = None,
    ) -> Tensor:
        """Continue each row of ``idx`` (B, T) by ``max_new_tokens``; returns (B, T + new).

        Runs in eval mode without autograd and restores the training mode afterwards.
        ``temperature == 0`` means greedy decoding (argmax; ``top_k``/``top_p`` then do
        nothing). ``on_token`` is called with each step's new tokens (B,), e.g. to stream
        text. ``use_cache=False`` runs the whole context every step, as nanoGPT does: the
        reference that the cached path is tested and benchmarked against. On the CPU,
        oneDNN is off while it runs (see :func:`_without_onednn`).
        """
        _check_sampling_args(temperature, top_k, top_p)
        if idx.dim() != 2 or idx.size(1) == 0:
            raise ModelError(
                "generate() needs a (batch, tokens) prompt with at least one token; "
                f"got shape {tuple(idx.shape)}."
            )
        if max_new_tokens < 0:
            raise ModelError(f"max_new_tokens must be >= 0; got {max_new_tokens}.")

        def sample(logits: Tensor) -> Tensor:  # (B, V) -> (B,)
            return sample_next_token(logits, temperature, top_k, top_p, generator)

        was_training = self.training
        self.eval()
        try:
            # inference_mode also skips autograd's view and version tracking: cheaper than
            # no_grad when per-op overhead is most of the cost, as it is here.
            with torch.inference_mode(), _without_onednn(idx.device):
                B, T = idx.size()
                seq = torch.empty((B, T + max_new_tokens), dtype=torch.long, device=idx.device)
                seq[:, :T] = idx
                if max_new_tokens > 0:
                    fill = self._fill_cached if use_cache else self._fill_uncached
                    fill(seq, T, sample, on_token)
        finally:
            self.train(was_training)
        # A plain tensor again: inference tensors cannot be saved for backward, and GRPO
        # feeds generated tokens to a training forward.
        return seq.clone()

    def _fill_uncached(
        self,
        seq: Tensor,
        n: int,
        sample: Callable[[Tensor], Tensor],
        on_token: Callable[[Tensor], None] | None,
    ) -> None:
        """Fill ``seq[:, n:]``, running the last block_size tokens through the model each step."""
        block_size = self.config.block_size
        while n < seq.size(1):
            logits, _ = self(seq[:, max(0, n - block_size) : n])  # (B, 1, V)
            next_tok = sample(logits[:, -1, :])
            seq[:, n] = next_tok
            n += 1
            if on_token is not None:
                on_token(next_tok)

    def _fill_cached(
        self,
        seq: Tensor,
        n: int,
        sample: Callable[[Tensor], Tensor],
        on_token: Callable[[Tensor], None] | None,
    ) -> None:
        """Fill ``seq[:, n:]`` with a KV cache: prefill the prompt once, then one token a step.

        Context shift: positions are learned absolute embeddings 0..block_size-1, so a full
        cache cannot take another token (its position does not exist), and cached keys
        cannot move to other positions. When it is full we prefill again from the last
        block_size // 2 tokens and carry on: block_size // 2 cheap steps per refill, a
        constant cost per token. The price is context: the model sees between
        block_size // 2 and block_size tokens, where the uncached loop always sees the last
        block_size. The two agree exactly until the sequence first outgrows block_size.
        """
        block_size = self.config.block_size
        cache, forward_cached = self.decoder(seq.size(0))
        logits = forward_cached(seq[:, max(0, n - block_size) : n])  # prefill
        while True:
            next_tok = sample(logits)  # (B,)
            seq[:, n] = next_tok
            n += 1
            if on_token is not None:
                on_token(next_tok)
            if n == seq.size(1):
                return  # no forward for a token nobody will sample
            if cache.length == block_size:
                cache.reset()
                logits = forward_cached(seq[:, n - block_size // 2 : n])
            else:
                logits = forward_cached(next_tok.view(-1, 1))

    def decoder(
        self, batch_size: int, weights: PlainWeights | None = None
    ) -> tuple[KVCache, Callable[[Tensor], Tensor]]:
        """A KV cache for ``batch_size`` rows and a step function: tokens (B, T) continuing
        the cached positions -> the last position's logits (B, V).

        The fast path for sampling and for GRPO's rollouts; call it under inference_mode.
        ``weights`` replaces the model's own (rl.policy passes them with LoRA folded in).
        """
        weights = self._plain_weights() if weights is None else weights
        device, dtype = self.wte.weight.device, self.wte.weight.dtype
        cache = KVCache(self.config, batch_size, device=device, dtype=dtype)

        def step(idx: Tensor) -> Tensor:
            if weights is None:
                logits: Tensor = self(idx, kv_cache=cache)[0]
                return logits[:, -1, :]
            return plain_decode_step(idx, cache, weights)

        return cache, step

    def _plain_weights(self) -> PlainWeights | None:
        """The parameters as plain tensors, or None if a layer was replaced or hooked.

        PEFT's LoRA, parametrizations and forward hooks change what a layer computes, which
        only the modules' own forward() knows; such models sample through forward().
        """
        if not all(plain_module(module) for module in self.modules()):
            return None
        return self.plain_weights()

    def plain_weights(self, weight: Callable[[nn.Module], Tensor] | None = None) -> PlainWeights:
        """The parameters as plain tensors, unchecked (see :meth:`_plain_weights`).

        ``weight`` gives a Linear layer's weight as its forward applies it: rl.policy folds
        LoRA adapters in (W + B A * scaling), so that LoRA rollouts take this path too.
        """

        def w_t(layer: nn.Linear) -> Tensor:
            return (layer.weight if weight is None else weight(layer)).t()

        blocks = []
        for block in self.h:
            assert isinstance(block, Block)
            attn, mlp = block.attn, block.mlp
            blocks.append(
                BlockWeights(
                    ln_1_weight=block.ln_1.weight,
                    ln_1_bias=block.ln_1.bias,
                    attn_t=w_t(attn.c_attn),
                    attn_bias=attn.c_attn.bias,
                    attn_proj_t=w_t(attn.c_proj),
                    attn_proj_bias=attn.c_proj.bias,
                    ln_2_weight=block.ln_2.weight,
                    ln_2_bias=block.ln_2.bias,
                    fc_t=w_t(mlp.c_fc),
                    fc_bias=mlp.c_fc.bias,
                    mlp_proj_t=w_t(mlp.c_proj),
                    mlp_proj_bias=mlp.c_proj.bias,
                )
            )
        return PlainWeights(
            wte=self.wte.weight,
            wpe=self.wpe.weight,
            ln_f_weight=self.ln_f.weight,
            ln_f_bias=self.ln_f.bias,
            head_t=w_t(self.lm_head).detach().contiguous(),  # a copy: see PlainWeights
            blocks=blocks,
            n_head=self.config.n_head,
        )


# What _plain_weights() knows how to compute without calling the modules.
_PLAIN_MODULES: frozenset[type[nn.Module]] = frozenset(
    {GPT, Block, CausalSelfAttention, MLP, nn.ModuleList, nn.Linear, nn.LayerNorm, nn.Embedding}
    | {nn.Dropout, Dropout, nn.GELU}
)


def plain_module(module: nn.Module) -> bool:
    """Whether :meth:`GPT.plain_weights` computes ``module`` as its forward() does."""
    return type(module) in _PLAIN_MODULES and not (
        module._forward_hooks or module._forward_pre_hooks
    )


# A Linear layer's weight for plain_decode_step: an (in, out) matrix, the (out, in) weight
# reordered into oneDNN's blocked layout (an mkldnn tensor, see packed_weights), or int8
# weights with the layer's bias, prepacked by torch.ops.quantized.linear_prepack (int8_weights).
Matrix = Tensor | torch.ScriptObject


class BlockWeights(NamedTuple):
    """One block's parameters; ``*_t`` are Linear weights as (in, out) matrices."""

    ln_1_weight: Tensor
    ln_1_bias: Tensor | None
    attn_t: Matrix
    attn_bias: Tensor | None
    attn_proj_t: Matrix
    attn_proj_bias: Tensor | None
    ln_2_weight: Tensor
    ln_2_bias: Tensor | None
    fc_t: Matrix
    fc_bias: Tensor | None
    mlp_proj_t: Matrix
    mlp_proj_bias: Tensor | None


class PlainWeights(NamedTuple):
    """A GPT-2-family model's parameters as plain tensors, for :func:`plain_decode_step`.

    ``head_t`` is the output projection as a contiguous (C, V) copy, not the (V, C)
    weight's transposed view: at GPT-2's 50,257 x 768 the view's matmul at B=8 took ~34 ms a
    decode step and the copy's ~27 (MKL on this AMD CPU; the other matrices gain ~3 ms in
    all, not worth their copies). Besides our GPT, a Hugging Face GPT-2
    fills it (rl.policy): its Conv1D weights are (in, out) already, it has
    LayerNorm eps 1e-5 like ours, and its GELU is the tanh approximation.
    """

    wte: Tensor
    wpe: Tensor
    ln_f_weight: Tensor
    ln_f_bias: Tensor | None
    head_t: Matrix
    blocks: list[BlockWeights]
    n_head: int
    eps: float = 1e-5
    gelu: str = "none"  # F.gelu's ``approximate``: "none" (ours, exact) or "tanh" (GPT-2)


# Why a second forward: a one-token step is ~100 tiny tensor ops, so Python and dispatch
# overhead, not arithmetic, sets its speed. Reaching ~100 parameters through
# nn.Module.__getattr__ and making ~50 module calls each step would cost as much again
# (bench/README.md: decode figures). So sampling and GRPO rollouts gather the parameters
# once and run forward()'s math on plain tensors, with each Linear as one mm/addmm call.
# The tests hold it to forward()'s logits, and to transformers' GPT-2 on the same weights.


def plain_decode_step(idx: Tensor, kv_cache: KVCache, w: PlainWeights) -> Tensor:
    """``GPT.forward(idx, kv_cache=kv_cache)[0][:, -1, :]`` in eval mode, on plain tensors.

    Activations stay 2-D, (B*T, C), so that every Linear is one matmul call.
    ``torch.layer_norm`` is the op behind ``F.layer_norm``, whose Python wrapper (it
    reads a cuDNN flag each call) costs a measurable 5% of a step here.
    """
    B, T = idx.size()
    C, nh, eps = w.wte.size(1), w.n_head, w.eps
    start = kv_cache.length
    x = (F.embedding(idx, w.wte) + w.wpe[start : start + T]).view(B * T, C)
    for i, b in enumerate(w.blocks):
        h = torch.layer_norm(x, (C,), b.ln_1_weight, b.ln_1_bias, eps)
        qkv = _affine(h, b.attn_t, b.attn_bias).view(B, T, 3, nh, C // nh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, nh, T, hs)
        y = causal_attention(q, k, v, kv_cache, i, 0.0)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B * T, C)
        x = _affine(y, b.attn_proj_t, b.attn_proj_bias, add=x)  # x + attention
        h = torch.layer_norm(x, (C,), b.ln_2_weight, b.ln_2_bias, eps)
        h = F.gelu(_affine(h, b.fc_t, b.fc_bias), approximate=w.gelu)  # (B*T, 4C)
        x = _affine(h, b.mlp_proj_t, b.mlp_proj_bias, add=x)  # x + MLP
    kv_cache.length += T
    x = torch.layer_norm(x.view(B, T, C)[:, -1, :], (C,), w.ln_f_weight, w.ln_f_bias, eps)
    return _affine(x, w.head_t, None)  # (B, V)


def _affine(x: Tensor, w_t: Matrix, bias: Tensor | None, add: Tensor | None = None) -> Tensor:
    """``add + x @ w_t + bias`` for 2-D ``x``, in one mm/addmm call when it can be."""
    if not isinstance(w_t, Tensor):  # int8, the bias packed with it (int8_weights)
        y: Tensor = torch.ops.quantized.linear_dynamic(x, w_t, True)
        return y if add is None else y.add_(add)
    if w_t.is_mkldnn:  # oneDNN's blocked (out, in) layout (packed_weights)
        linear = torch.ops.mkldnn._linear_pointwise
        if add is None:
            return linear(x, w_t, bias, "none", [], "")  # type: ignore[no-any-return]
        return linear.binary(x, add, w_t, bias, "add")  # type: ignore[no-any-return]
    base = bias if add is None else (add if bias is None else add + bias)
    return torch.mm(x, w_t) if base is None else torch.addmm(base, x, w_t)


# Below this width oneDNN's fixed cost per call (~20 us) outweighs what its layout saves.
PACK_MIN_WIDTH = 512


def packed_weights(w: PlainWeights, rows: int) -> PlainWeights:
    """``w`` with every Linear weight and the head reordered into oneDNN's blocked layout
    for ``rows``-row inputs; ``w`` itself where that would not pay.

    Why: at a rollout's 8 rows MKL's sgemm runs far below the memory bound (GPT-2's head:
    26 ms where reading its 154 MB takes 5; it repacks the weight on every call), and
    oneDNN's linear on a weight reordered once takes 9.5 ms, the 768 x 3,072 matrices about
    0.6 of the time (bench/README.md). Still float32: the logits differ only by summation
    order (~3e-6). The reorder, ~0.2 s for GPT-2-small, is paid once per set of weights.
    """
    if (
        w.wte.size(1) < PACK_MIN_WIDTH
        or w.wte.device.type != "cpu"
        or w.wte.dtype != torch.float32
        or not torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    ):
        return w

    def pack(w_t: Matrix) -> Tensor:
        assert isinstance(w_t, Tensor)
        packed: Tensor = torch.ops.mkldnn._reorder_linear_weight(w_t.detach().t(), rows)
        return packed

    blocks = [
        b._replace(
            attn_t=pack(b.attn_t),
            attn_proj_t=pack(b.attn_proj_t),
            fc_t=pack(b.fc_t),
            mlp_proj_t=pack(b.mlp_proj_t),
        )
        for b in w.blocks
    ]
    return w._replace(blocks=blocks, head_t=pack(w.head_t))


def int8_weights(w: PlainWeights) -> PlainWeights:
    """``w`` with every Linear layer's weight in int8, for GRPO's int8 rollouts.

    Why: a decode step at a rollout's 8 rows reads every weight once for little arithmetic,
    so its time is bytes; int8 weights are a quarter of float32's (one GPT-2-small decode
    step in a rollout: 26.8 ms against 49.8 on packed float32 weights, bench/README.md).
    Weights are quantised symmetrically per output channel, activations per tensor at each
    call (dynamic quantisation, with reduce_range: AVX2's int8 products are summed in
    saturating 16-bit pairs). The logits then differ from float32's, which rl.grpo corrects
    for. CPU only: these are torch's fbgemm/qnnpack kernels. The embeddings and norms stay
    float32.
    """
    blocks = [
        b._replace(
            attn_t=_int8(b.attn_t, b.attn_bias),
            attn_bias=None,
            attn_proj_t=_int8(b.attn_proj_t, b.attn_proj_bias),
            attn_proj_bias=None,
            fc_t=_int8(b.fc_t, b.fc_bias),
            fc_bias=None,
            mlp_proj_t=_int8(b.mlp_proj_t, b.mlp_proj_bias),
            mlp_proj_bias=None,
        )
        for b in w.blocks
    ]
    return w._replace(blocks=blocks, head_t=_int8(w.head_t, None))


def _int8(w_t: Matrix, bias: Tensor | None) -> torch.ScriptObject:
    """One Linear's (in, out) weight and bias, quantised and prepacked for linear_dynamic."""
    assert isinstance(w_t, Tensor), "already int8"
    weight = w_t.detach().float().t().contiguous()  # (out, in)
    scale = weight.abs().amax(dim=1).clamp(min=1e-12).double() / 127
    zero = torch.zeros(scale.shape, dtype=torch.long)
    with warnings.catch_warnings():  # torch 2.13 deprecates quantized tensors for torchao
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        q = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
    b = None if bias is None else bias.detach().float()
    packed: torch.ScriptObject = torch.ops.quantized.linear_prepack(q, b)
    return packed


@contextmanager
def _without_onednn(device: torch.device) -> Iterator[None]:
    """Sample with ATen's own CPU kernels instead of oneDNN's (process-wide; restored).

    On tensors this small, oneDNN's GELU costs tens of microseconds of setup per call where
    ATen's computes the same function in a few: turning it off makes sampling ~25% faster.
    Training keeps oneDNN, which is much faster on batch-sized tensors.
    """
    if device.type != "cpu" or not torch.backends.mkldnn.enabled:
        yield
        return
    # (torch types the module attribute as its descriptor, hence the ignores)
    torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = True  # type: ignore[assignment]


# ---------------------------------------------------------------------------- sampling


def _check_sampling_args(temperature: float, top_k: int | None, top_p: float) -> None:
    if temperature < 0:
        raise ModelError(f"temperature must be >= 0 (0 means greedy); got {temperature}.")
    if top_k is not None and top_k < 1:
        raise ModelError(f"top_k must be a positive integer or None; got {top_k}.")
    if not 0.0 < top_p <= 1.0:
        raise ModelError(f"top_p must be in (0, 1]; got {top_p}.")


def sample_next_token(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> Tensor:
    """Draw one token per row from ``logits`` (B, V); returns (B,).

    ``temperature == 0`` is greedy (argmax). Otherwise the logits are divided by the
    temperature, cut to the ``top_k`` likeliest tokens, then to the nucleus: the smallest
    set of likeliest tokens whose probability reaches ``top_p`` (never empty). A sequence
    of generators draws each equal block of rows from its own generator, so a block's
    tokens do not depend on which other rows share the batch (GRPO's groups).
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth_best = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        sorted_probs = F.softmax(sorted_logits, dim=-1)
        # Drop a token when the likelier ones before it already reach top_p; the mass before
        # the first token is 0, so the likeliest always stays.
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))
        logits = logits.scatter(-1, order, sorted_logits)
    # Unnormalised probabilities: the softmax's division changes no draw below.
    weights = torch.exp(logits - logits.amax(dim=-1, keepdim=True))  # (B, V), cut tokens 0
    if weights.device.type == "mps":  # no float64 there: the exponential race instead
        return _exponential_race(weights, generator)
    return _inverse_cdf(weights, generator)


def _blocks(
    t: Tensor, generator: torch.Generator | Sequence[torch.Generator] | None
) -> list[tuple[Tensor, torch.Generator | None]]:
    """``t``'s rows with the generator that fills them: one, or one per equal block."""
    if isinstance(generator, Sequence):
        return list(zip(t.chunk(len(generator)), generator, strict=True))
    return [(t, generator)]


def _inverse_cdf(
    weights: Tensor, generator: torch.Generator | Sequence[torch.Generator] | None
) -> Tensor:
    """Token i is drawn where u * sum(w) first falls below the running sum up to w_i.

    One uniform per row: at GPT-2's 50,257 tokens it costs ~1 ms for 8 rows, where an
    exponential race (argmax p_i / E_i, torch.multinomial's method) draws 50,257
    exponentials a row and costs ~12 ms, a seventh of a decode step (bench/README.md). The
    running sum is float64: in float32 its rounding (~6e-8 of the sum) would bend the odds
    of every token less likely than that. A token of weight 0 is never drawn: the sum does
    not rise there, and the target stays below the total.
    """
    cdf = weights.cumsum(dim=-1, dtype=torch.float64)  # (B, V)
    total = cdf[:, -1:]
    u = torch.empty_like(total)
    for block, gen in _blocks(u, generator):
        block.uniform_(generator=gen)  # one uniform a row, in [0, 1)
    target = torch.minimum(u * total, total.nextafter(torch.zeros_like(total)))
    return torch.searchsorted(cdf, target, right=True).squeeze(1)


def _exponential_race(
    weights: Tensor, generator: torch.Generator | Sequence[torch.Generator] | None
) -> Tensor:
    """argmax of w_i / E_i with E_i ~ Exp(1): token i wins with probability w_i / sum(w)."""
    race = torch.empty_like(weights)
    for block, gen in _blocks(race, generator):
        block.exponential_(generator=gen)
    return (weights / race).argmax(dim=-1)
