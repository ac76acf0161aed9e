"""GRPO's arithmetic: advantages, the clipped surrogate with a k3 KL, SFT, token regions.

Pure tensor functions with no model or config in sight, so each is unit-tested against a
hand-computed example. The formulation follows DeepSeekMath's GRPO with the variants
users of TRL expect:

    ratio_t  = exp(logp_t - old_logp_t)
    loss_t   = -min(ratio_t * A, clip(ratio_t, 1 - eps_low, 1 + eps_high) * A) + beta * KL_t
    KL_t     = exp(ref_t - logp_t) - (ref_t - logp_t) - 1           (k3: unbiased, >= 0)

and ``loss_type`` decides how token losses are averaged (see :func:`reduce_loss`). With
``kl_weighted`` the KL term is ``beta * ratio_t * KL_t`` (TRL's ``use_bias_correction_kl``,
DeepSeek-V3.2): on-policy its gradient is ``beta * (logp_t - ref_t)``, the unbiased gradient
of the reverse KL, where the plain k3 term's is ``beta * (1 - exp(ref_t - logp_t))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

LossType = Literal["grpo", "dr_grpo", "dapo", "bnpo"]
ScaleRewards = Literal["group", "batch", "none"]


def group_advantages(
    rewards: Tensor, group_size: int, scale: ScaleRewards = "group", eps: float = 1e-4
) -> Tensor:
    """Reward minus its group's mean, divided by the group's (or batch's) std, or not.

    ``rewards`` (N,) holds whole groups back to back: rows ``k*group_size ...`` are one
    prompt's completions. A group whose rewards are all equal gets zero advantages.
    """
    grouped = rewards.view(-1, group_size)  # (P, G)
    mean = grouped.mean(dim=1, keepdim=True)
    adv = grouped - mean
    if scale == "group":
        std = (
            grouped.std(dim=1, keepdim=True, unbiased=group_size > 1)
            if group_size > 1
            else torch.zeros_like(mean)
        )
        adv = adv / (std + eps)
    elif scale == "batch":
        std = rewards.std() if rewards.numel() > 1 else rewards.new_zeros(())
        adv = adv / (std + eps)
    return adv.reshape(-1)


def token_logprobs(logits: Tensor, targets: Tensor, *, keep_graph: bool = False) -> Tensor:
    """log p(target) per position: (B, T, V), (B, T) -> (B, T) float32.

    Float32 logits are overwritten (pass logits nothing else reads). At a 50k vocabulary the
    logits are the step's largest tensor; log_softmax and its gradient would each add one
    more of them. Here the logits' own memory holds their softmax after the forward and
    their gradient after the backward, so the three share one tensor (bench/README.md:
    GPT-2-small's peak memory). ``keep_graph``: the graph will be backpropagated again
    (``retain_graph``), so the backward must leave the softmax intact and allocate.
    """
    logp: Tensor = _TokenLogprobs.apply(logits.float(), targets, keep_graph)  # type: ignore[no-untyped-call]
    return logp


class _TokenLogprobs(torch.autograd.Function):
    """gather(logits, target) - logsumexp(logits); the gradient is g * (onehot - softmax)."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, targets: Tensor, keep_graph: bool) -> Tensor:
        logp = logits.new_empty(targets.shape)
        for b in range(logits.size(0)):  # a row at a time: temporaries of one row only
            row = logits[b]  # (T, V)
            lse = torch.logsumexp(row, dim=-1, keepdim=True)  # (T, 1)
            logp[b] = row.gather(-1, targets[b].unsqueeze(-1)).squeeze(-1) - lse.squeeze(-1)
            row.sub_(lse).exp_()  # the softmax, in place
        ctx.save_for_backward(logits, targets)
        ctx.keep_graph = keep_graph
        return logp

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # pyright: ignore[reportIncompatibleMethodOverride]
        probs, targets = ctx.saved_tensors
        g = grad.unsqueeze(-1)  # (B, T, 1)
        grad_logits = probs * -g if ctx.keep_graph else probs.mul_(-g)
        return grad_logits.scatter_add_(-1, targets.unsqueeze(-1), g), None, None


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token KL(policy || ref) estimate, exp(d) - d - 1 with d = ref - logp; 0 where equal."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


@dataclass
class LossParts:
    """The loss to backpropagate and what to log about it (plain floats)."""

    loss: Tensor
    policy_loss: float
    kl: float
    clip_low: float  # fraction of tokens clipped below (ratio < 1 - eps, A < 0)
    clip_high: float  # fraction of tokens clipped above (ratio > 1 + eps_high, A > 0)
    tokens: int
    # int8 rollouts only: the mean truncated importance weight, and the fraction truncated
    is_weight: float | None = None
    is_truncated: float | None = None


def per_token_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    ref_logp: Tensor | None,
    *,
    beta: float,
    eps_low: float,
    eps_high: float,
    kl_weighted: bool = False,
    rollout_logp: Tensor | None = None,
    is_cap: float = 2.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(loss_t, surrogate_t, kl_t, low-clipped, high-clipped), each (B, T).

    ``kl_t`` is the term the loss holds: times the ratio when ``kl_weighted``.
    ``rollout_logp``: the tokens were sampled by another policy (int8 rollouts), so the
    surrogate is weighted by min(p_old / p_rollout, is_cap), a constant: truncated
    importance sampling, as FlashRL and TRL's vLLM correction do. The cap bounds the
    variance a token the sampler found unlikely would bring.
    """
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(1)  # (B, 1)
    surrogate = -torch.min(ratio * adv, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv)
    if rollout_logp is not None:
        surrogate = surrogate * truncated_is_weight(old_logp, rollout_logp, is_cap)
    kl = k3_kl(logp, ref_logp) if ref_logp is not None and beta != 0 else torch.zeros_like(logp)
    if kl_weighted:
        kl = kl * ratio  # the ratio is not detached: it carries gradient even where it is 1
    loss = surrogate + beta * kl
    low = (ratio < 1 - eps_low) & (adv < 0)
    high = (ratio > 1 + eps_high) & (adv > 0)
    return loss, surrogate, kl, low, high


def truncated_is_weight(old_logp: Tensor, rollout_logp: Tensor, cap: float) -> Tensor:
    """min(p_old / p_rollout, cap) per token, without gradient."""
    return torch.exp(old_logp - rollout_logp).clamp(max=cap).detach()


def reduce_loss(
    token_loss: Tensor,
    mask: Tensor,
    loss_type: LossType,
    *,
    max_gen_len: int,
    step_tokens: int,
    accum: int,
) -> Tensor:
    """Average token losses as ``loss_type`` says, scaled for ``accum`` micro-batches.

    - ``grpo``: mean over each sequence's tokens, then over sequences (long answers weigh
      less per token: the length bias Dr. GRPO points out);
    - ``bnpo``: mean over the micro-batch's tokens;
    - ``dr_grpo``: sum divided by sequences x max_gen_len, a constant;
    - ``dapo``: sum divided by the whole step's tokens (all micro-batches), so every token
      of the step weighs the same.
    """
    masked = token_loss * mask
    if loss_type == "grpo":
        per_seq = masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return per_seq.mean() / accum
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1) / accum
    if loss_type == "dr_grpo":
        return masked.sum() / (mask.size(0) * max_gen_len) / accum
    return masked.sum() / max(step_tokens, 1)  # dapo: already the step's normaliser


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    ref_logp: Tensor | None = None,
    *,
    beta: float = 0.0,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    loss_type: LossType = "grpo",
    max_gen_len: int = 1,
    step_tokens: int | None = None,
    accum: int = 1,
    kl_weighted: bool = False,
    rollout_logp: Tensor | None = None,
    is_cap: float = 2.0,
) -> LossParts:
    """The GRPO loss of one micro-batch; ``mask`` (B, T) marks the completion tokens trained."""
    mask = mask.to(logp.dtype)
    loss_t, surrogate, kl, low, high = per_token_loss(
        logp,
        old_logp,
        advantages,
        ref_logp,
        beta=beta,
        eps_low=eps_low,
        eps_high=eps_low if eps_high is None else eps_high,
        kl_weighted=kl_weighted,
        rollout_logp=rollout_logp,
        is_cap=is_cap,
    )
    n = int(mask.sum().item())
    kwargs = {
        "max_gen_len": max_gen_len,
        "step_tokens": n if step_tokens is None else step_tokens,
        "accum": accum,
    }
    loss = reduce_loss(loss_t, mask, loss_type, **kwargs)
    denom = max(n, 1)
    with torch.no_grad():
        parts = LossParts(
            loss=loss,
            policy_loss=float((surrogate * mask).sum() / denom),
            kl=float((kl * mask).sum() / denom),
            clip_low=float((low * mask).sum() / denom),
            clip_high=float((high * mask).sum() / denom),
            tokens=n,
        )
        if rollout_logp is not None:
            ratio = torch.exp(old_logp - rollout_logp)
            parts.is_weight = float((ratio.clamp(max=is_cap) * mask).sum() / denom)
            parts.is_truncated = float(((ratio > is_cap) * mask).sum() / denom)
        return parts


def sft_loss(logp: Tensor, weights: Tensor) -> Tensor:
    """Weighted negative log-likelihood of reference tokens: sum(-logp * w) / sum(w > 0)."""
    return -(logp * weights).sum() / (weights > 0).sum().clamp(min=1)


# ----------------------------------------------------------------------------- regions


def token_regions(
    pieces: list[str], think_start: str, think_end: str, thinking_open: bool = False
) -> tuple[list[bool], list[bool]]:
    """(thinking, answer) flags per token, from each token's text ``pieces``.

    Thinking runs from the think-start tag (or the first token when the prompt already
    opened it) through the last think-end tag, tags included; the answer is what follows
    the last think-end tag. With no think-end tag, an opened thinking runs to the end and
    tokens before it are answer; with no tags at all, every token is answer.
    """
    text = "".join(pieces)
    ends: list[int] = []
    pos = 0
    for piece in pieces:
        pos += len(piece)
        ends.append(pos)  # char offset just after each token
    starts = [e - len(p) for e, p in zip(ends, pieces, strict=True)]
    close = text.rfind(think_end)
    open_at = 0 if thinking_open else text.find(think_start)
    if close >= 0:
        think_from = open_at if 0 <= open_at <= close else 0
        think_to = close + len(think_end)
    elif open_at >= 0:
        think_from, think_to = open_at, len(text) + 1
    else:
        think_from = think_to = -1
    thinking = [
        think_from <= s < think_to and e > think_from for s, e in zip(starts, ends, strict=True)
    ]
    if think_from < 0:
        thinking = [False] * len(pieces)
    answer = [not t and (close < 0 or s >= close) for t, s in zip(thinking, starts, strict=True)]
    return thinking, answer


def layer_filter(layer: int | None, start: int, end: int, *, include_shared: bool = True) -> bool:
    """Whether a parameter of ``layer`` (None: embeddings, norms, head) is in [start, end)."""
    if layer is None:
        return include_shared
    return start <= layer < end
