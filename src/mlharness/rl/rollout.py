"""Rollouts: a group of sampled completions per prompt, with a KV cache and seed 002's logit rules.

Prompts are bucketed by token length and each bucket is generated as one batch (every
prompt repeated ``group_size`` times), so no prompt needs padding and any model, including
ours with learned absolute positions, decodes exactly as it would one prompt at a time.
A row stops at a stop sequence (kept in the completion, so the model learns to stop) or at
``max_new_tokens`` (then it is truncated).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mlharness.lm.model import sample_next_token
from mlharness.rl.config import GenerationConfig
from mlharness.rl.policy import Policy


@dataclass
class Completion:
    """One sampled completion of one prompt."""

    prompt_index: int  # index into the prompts passed to generate()
    ids: list[int]
    truncated: bool  # hit max_new_tokens without a stop sequence
    # int8 rollouts: each token's log-probability under the int8 policy that sampled it
    # (raw logits, no temperature or logit rules: as the trainer scores it); else None
    logp: list[float] | None = None


@dataclass(frozen=True)
class ThinkRules:
    """Seed 002's structural biases, resolved to token ids (the first token of each tag)."""

    start: list[int]
    end: list[int]
    answer_start: list[int]
    bias_close_think: float
    bias_answer_start: float
    punish_extra_think_end: float
    min_think_tokens: int
    think_end_early_bias: float

    @classmethod
    def from_config(
        cls, g: GenerationConfig, encode: Callable[[str], list[int]]
    ) -> ThinkRules | None:
        if not any(
            (
                g.bias_close_think,
                g.bias_answer_start,
                g.punish_extra_think_end,
                g.min_think_tokens,
                g.think_end_early_bias,
            )
        ):
            return None
        return cls(
            start=encode(g.think_start_tag),
            end=encode(g.think_end_tag),
            answer_start=encode(g.answer_start_tag) if g.answer_start_tag else [],
            bias_close_think=g.bias_close_think,
            bias_answer_start=g.bias_answer_start,
            punish_extra_think_end=g.punish_extra_think_end,
            min_think_tokens=g.min_think_tokens,
            think_end_early_bias=g.think_end_early_bias,
        )


def _ends_with(seq: list[int], tail: list[int]) -> bool:
    return bool(tail) and len(seq) >= len(tail) and seq[-len(tail) :] == tail


class _ThinkState:
    """Where one row stands: before thinking, thinking (with a count), or after it."""

    def __init__(self, prompt: list[int], rules: ThinkRules) -> None:
        self.rules = rules
        self.thinking = _ends_with(prompt, rules.start)  # a template may open the thinking
        self.closed = False
        self.think_tokens = 0
        self.just_closed = False

    def observe(self, seq: list[int]) -> None:
        r = self.rules
        self.just_closed = False
        if not self.thinking and not self.closed and _ends_with(seq, r.start):
            self.thinking, self.think_tokens = True, 0
        elif self.thinking and _ends_with(seq, r.end):
            self.thinking, self.closed, self.just_closed = False, True, True
        elif self.thinking:
            self.think_tokens += 1

    def bias(self, logits: Tensor) -> None:
        """Add this row's biases to its logits (V,) in place."""
        r = self.rules
        if r.end:
            end = r.end[0]
            if self.thinking:
                if self.think_tokens < r.min_think_tokens:
                    logits[end] -= r.think_end_early_bias
                else:
                    logits[end] += r.bias_close_think
            elif self.closed:
                logits[end] += r.punish_extra_think_end
        if self.just_closed and r.answer_start:
            logits[r.answer_start[0]] += r.bias_answer_start


@torch.inference_mode()
def generate(
    policy: Policy,
    prompts: Sequence[list[int]],
    *,
    group_size: int,
    max_new_tokens: int,
    generation: GenerationConfig,
    stop: Sequence[list[int]],
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    greedy: bool = False,
    rules: ThinkRules | None = None,
    max_batch: int = 256,
    int8: bool = False,
) -> list[list[Completion]]:
    """``group_size`` completions for each prompt; result[i] is prompt i's group.

    ``generator`` may be one per prompt: a group's completions then depend only on its
    prompt and its generator, not on the prompts batched with it (or on which process of a
    torchrun job generates it). ``int8`` samples from the policy's int8 copy and keeps each
    token's log-probability under it (Completion.logp).
    """
    was_training = policy.model.training
    policy.model.eval()
    out: list[list[Completion]] = [[] for _ in prompts]
    try:
        buckets: dict[int, list[int]] = defaultdict(list)
        for i, p in enumerate(prompts):
            buckets[len(p)].append(i)
        per_batch = max(1, max_batch // group_size)
        for length in sorted(buckets):
            members = buckets[length]
            for k in range(0, len(members), per_batch):
                chunk = members[k : k + per_batch]
                gens = (
                    [generator[i] for i in chunk] if isinstance(generator, Sequence) else generator
                )
                rows = _generate_bucket(
                    policy,
                    [prompts[i] for i in chunk],
                    group_size,
                    max_new_tokens,
                    generation,
                    stop,
                    gens,
                    greedy,
                    rules,
                    int8,
                )
                for j, i in enumerate(chunk):
                    out[i] = [
                        Completion(i, ids, trunc, logp)
                        for ids, trunc, logp in rows[j * group_size : (j + 1) * group_size]
                    ]
    finally:
        policy.model.train(was_training)
    return out


def _generate_bucket(
    policy: Policy,
    prompts: list[list[int]],
    group_size: int,
    max_new_tokens: int,
    g: GenerationConfig,
    stop: Sequence[list[int]],
    generator: torch.Generator | Sequence[torch.Generator] | None,
    greedy: bool,
    rules: ThinkRules | None,
    int8: bool,
) -> list[tuple[list[int], bool, list[float] | None]]:
    device = next(policy.model.parameters()).device
    ids = torch.tensor(prompts, dtype=torch.long, device=device).repeat_interleave(group_size, 0)
    B = ids.size(0)
    step = policy.decoder(B, int8)
    logits = step(ids)  # prefill: (B, V)
    rows: list[list[int]] = [[] for _ in range(B)]
    logps: list[list[float]] | None = [[] for _ in range(B)] if int8 else None
    done = [False] * B
    states = [_ThinkState(prompts[b // group_size], rules) for b in range(B)] if rules else None
    single_stops = {s[0] for s in stop if len(s) == 1}
    multi_stops = [s for s in stop if len(s) > 1]
    pad = policy.tokenizer.pad_id
    for t in range(max_new_tokens):
        logits = logits.float()
        raw = logits.clone() if logps is not None and states is not None else logits
        if states is not None:
            for b, st in enumerate(states):
                if not done[b]:
                    st.bias(logits[b])
        if greedy:
            next_tok = logits.argmax(dim=-1)
        else:
            next_tok = sample_next_token(logits, g.temperature, g.top_k, g.top_p, generator)
        toks = next_tok.tolist()
        if logps is not None:
            picked = raw.gather(1, next_tok.view(B, 1)).squeeze(1) - raw.logsumexp(dim=-1)
            for b, lp in enumerate(picked.tolist()):
                if not done[b]:
                    logps[b].append(lp)
        for b in range(B):
            if done[b]:
                toks[b] = pad
                continue
            row = rows[b]
            row.append(toks[b])
            if toks[b] in single_stops or any(_ends_with(row, s) for s in multi_stops):
                done[b] = True
            elif states is not None:
                states[b].observe(row)
        if all(done) or t == max_new_tokens - 1:
            break
        logits = step(torch.tensor(toks, dtype=torch.long, device=device).view(B, 1))
    return [(rows[b], not done[b], None if logps is None else logps[b]) for b in range(B)]
