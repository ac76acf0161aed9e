"""Prompts -> scored groups of completions: what a GRPO step and an evaluation share.

A :class:`Sampler` encodes prompts, samples completions (:mod:`mlharness.rl.rollout`) and
scores them with the run's rewards. It sits apart from the trainer so that ``mlx eval``
scores validation prompts exactly as training does without importing the trainer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mlharness.rl.config import RLConfig
from mlharness.rl.data import Example, PromptStream, encode_prompt
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


def sample_lines(groups: Sequence[Group], step: int, limit: int, prompts: bool) -> list[str]:
    """JSON lines of a step's first ``limit`` completions with their scores (samples/)."""
    from mlharness.runs.io import dumps

    lines: list[str] = []
    for g in groups:
        for i, text in enumerate(g.texts):
            item: dict[str, Any] = {"step": step, "completion": text}
            if prompts:
                item["prompt"] = g.example.prompt
            item["reference"] = g.example.completion
            item["reward"] = float(g.rewards[i])
            item["rewards"] = {k: float(v[i]) for k, v in g.per_reward.items()}
            item["advantage"] = float(g.advantages[i]) if g.advantages is not None else None
            item["truncated"] = g.completions[i].truncated
            lines.append(dumps(item, indent=None))
            if len(lines) >= limit:
                return lines
    return lines


def step_record(groups: Sequence[Group], step: int) -> dict[str, Any]:
    """A training step's reward statistics over all its completions, for metrics.ndjson."""
    rewards = np.concatenate([g.rewards for g in groups])
    record: dict[str, Any] = {
        "step": step,
        "reward": float(rewards.mean()),
        "reward_std": float(rewards.std()),
    }
    for name in groups[0].per_reward:
        values = np.concatenate([g.per_reward[name] for g in groups])
        record[f"rewards/{name}"] = float(values.mean())
        record[f"rewards/{name}_std"] = float(values.std())
    record["frac_reward_zero_std"] = sum(not g.spread for g in groups) / len(groups)
    return record


def collect_groups(
    sampler: Sampler, stream: PromptStream, config: RLConfig
) -> tuple[list[Group], int, int]:
    """A step's groups, how many were generated and how many are flat.

    With dynamic sampling, groups whose rewards are all equal are dropped and refilled
    from the next prompts, up to ``max_resample_rounds`` times.
    """
    t = config.trainer
    want = t.prompts_per_step
    groups = sampler.run(stream.take(want), t.num_rollout_samples)
    generated = len(groups)
    if not t.dynamic_sampling:
        return groups, generated, 0
    kept = [g for g in groups if g.spread]
    dropped = [g for g in groups if not g.spread]
    rounds = 0
    while len(kept) < want and rounds < t.max_resample_rounds:
        rounds += 1
        more = sampler.run(stream.take(want - len(kept)), t.num_rollout_samples)
        generated += len(more)
        kept += [g for g in more if g.spread]
        dropped += [g for g in more if not g.spread]
    # Out of rounds: top up with flat groups (no policy gradient, KL and SFT still act).
    return (kept + dropped)[:want], generated, len(dropped)
