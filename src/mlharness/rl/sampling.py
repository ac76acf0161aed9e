"""Prompts -> scored groups of completions: what a GRPO step and an evaluation share.

A :class:`Sampler` encodes prompts, samples completions (:mod:`mlharness.rl.rollout`) and
scores them with the run's rewards. It sits apart from the trainer so that ``mlx eval``
scores validation prompts exactly as training does without importing the trainer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from mlharness.rl.config import RLConfig
from mlharness.rl.data import Example, encode_prompt
from mlharness.rl.policy import Policy
from mlharness.rl.rewards import RewardContext, RewardSet
from mlharness.rl.rollout import Completion, ThinkRules, generate


@dataclass
class Group:
    """One prompt, its sampled completions and their scores."""

    example: Example
    prompt_ids: list[int]
    completions: list[Completion]
    texts: list[str]
    rewards: np.ndarray  # (G,) weighted totals
    per_reward: dict[str, np.ndarray]
    advantages: Tensor | None = None
    old_logp: list[Tensor] = field(default_factory=list)

    @property
    def spread(self) -> bool:
        return bool(np.ptp(self.rewards) > 1e-9)


class Sampler:
    """Prompts -> scored groups of completions: what training steps and evaluation share."""

    def __init__(
        self, config: RLConfig, policy: Policy, rewards: RewardSet, generator: torch.Generator
    ) -> None:
        self.config, self.policy, self.rewards, self.generator = config, policy, rewards, generator
        self.tokenizer = policy.tokenizer
        self.stop = self.tokenizer.stop_sequences(config.generation.stop)
        self.rules = ThinkRules.from_config(config.generation, self.tokenizer.encode)

    def encode(self, example: Example) -> list[int]:
        d = self.config.data
        ids, _ = encode_prompt(self.tokenizer, example, d.max_prompt_len, d.system_prompt)
        return ids

    def contexts(self, example: Example, texts: Sequence[str]) -> list[RewardContext]:
        g = self.config.generation
        return [
            RewardContext(
                generated_text=text,
                prompt=example.prompt,
                reference_completion=example.completion or None,
                test_cases=example.test_cases,
                meta=dict(example.meta),
                think_start_tag=g.think_start_tag,
                think_end_tag=g.think_end_tag,
            )
            for text in texts
        ]

    def text(self, ids: list[int]) -> str:
        """The completion's text without its stop sequence (rewards score the content)."""
        text = self.tokenizer.decode(ids)
        for stop in self.stop:
            if ids[-len(stop) :] == stop:
                return self.tokenizer.decode(ids[: -len(stop)])
        return text

    def run(
        self, examples: Sequence[Example], group_size: int, *, greedy: bool = False
    ) -> list[Group]:
        prompts = [self.encode(e) for e in examples]
        generated = generate(
            self.policy,
            prompts,
            group_size=group_size,
            max_new_tokens=self.config.data.max_gen_len,
            generation=self.config.generation,
            stop=self.stop,
            generator=self.generator,
            greedy=greedy,
            rules=self.rules,
        )
        texts = [[self.text(c.ids) for c in comps] for comps in generated]
        contexts = [c for e, t in zip(examples, texts, strict=True) for c in self.contexts(e, t)]
        scores = self.rewards.score(contexts)
        groups = []
        for i, example in enumerate(examples):
            sl = slice(i * group_size, (i + 1) * group_size)
            groups.append(
                Group(
                    example,
                    prompts[i],
                    generated[i],
                    texts[i],
                    np.asarray(scores.total[sl], dtype=np.float64),
                    {k: np.asarray(v[sl]) for k, v in scores.per_reward.items()},
                )
            )
        return groups


def summarize_groups(groups: Sequence[Group], prefix: str = "") -> dict[str, float]:
    """Mean total reward and mean of each reward over every completion of ``groups``."""
    rewards = np.concatenate([g.rewards for g in groups])
    out = {f"{prefix}reward": float(rewards.mean())}
    for name in groups[0].per_reward:
        out[f"{prefix}rewards/{name}"] = float(
            np.concatenate([g.per_reward[name] for g in groups]).mean()
        )
    return out
