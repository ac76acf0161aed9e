"""Prompts -> scored groups of completions: what a GRPO step and an evaluation share.

A :class:`Sampler` encodes prompts, samples completions (:mod:`mlharness.rl.rollout`) and
scores them with the run's rewards. It sits apart from the trainer so that ``mlx eval``
scores validation prompts exactly as training does without importing the trainer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from mlharness.rl.config import RLConfig
from mlharness.rl.data import Example, PromptStream, encode_prompt
from mlharness.rl.policy import Policy
from mlharness.rl.rewards import RewardContext, RewardSet
from mlharness.rl.rollout import Completion, ThinkRules, generate
from mlharness.runs.device import Dist

T = TypeVar("T")


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

    def draw_seeds(self, n: int) -> list[int]:
        """One seed per prompt from the run's generator (the same on every process)."""
        gen = self.generator
        return torch.randint(0, 2**62, (n,), generator=gen, device=gen.device).tolist()

    def run(
        self,
        examples: Sequence[Example],
        group_size: int,
        *,
        greedy: bool = False,
        seeds: Sequence[int] | None = None,
        rollout: bool = False,
    ) -> list[Group]:
        """Score ``group_size`` completions of each example.

        Each group samples from a generator of its own, seeded from ``seeds`` (drawn here
        when not given), so its completions do not depend on the prompts sharing its batch.
        ``rollout``: training rollouts, from the int8 copy where generation.int8_rollouts
        says so (evaluation always samples the float policy).
        """
        prompts = [self.encode(e) for e in examples]
        generators: list[torch.Generator] | None = None
        if not greedy:
            device = self.generator.device
            generators = [
                torch.Generator(device=device).manual_seed(s)
                for s in (seeds if seeds is not None else self.draw_seeds(len(examples)))
            ]
        generated = generate(
            self.policy,
            prompts,
            group_size=group_size,
            max_new_tokens=self.config.data.max_gen_len,
            generation=self.config.generation,
            stop=self.stop,
            generator=generators,
            greedy=greedy,
            rules=self.rules,
            int8=rollout and self.config.generation.int8_rollouts,
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


def own_share(n: int, chunk: int, dist: Dist) -> list[int]:
    """This process's indices of ``n`` items in chunks of ``chunk``: chunks rank, rank + world...

    A step's micro-batches are dealt out this way, as lm training deals its micro-batches.
    """
    chunks = range(0, n, chunk)[dist.rank :: dist.world_size]
    return [i for start in chunks for i in range(start, min(start + chunk, n))]


def interleave(parts: Sequence[Sequence[T]], chunk: int) -> list[T]:
    """Undo :func:`own_share`: every process's items (``parts[rank]``) in the step's order."""
    world = len(parts)
    out: list[T] = []
    k = 0
    while True:
        part = parts[k % world]
        start = (k // world) * chunk
        if start >= len(part):
            return out
        out.extend(part[start : start + chunk])
        k += 1


def collect_groups(
    sampler: Sampler, stream: PromptStream, config: RLConfig, dist: Dist | None = None
) -> tuple[list[Group], int, int]:
    """This process's share of a step's groups, how many were generated and how many are flat.

    Every process takes the step's prompts and their seeds from the same stream and
    generator, and generates its share (:func:`own_share` of the micro-batches). With
    dynamic sampling (one process only), groups whose rewards are all equal are dropped and
    refilled from the next prompts, up to ``max_resample_rounds`` times.
    """
    t = config.trainer
    want = t.prompts_per_step
    examples = stream.take(want)
    seeds = sampler.draw_seeds(want)
    mine = own_share(want, t.ppo_batch_size, dist or Dist())
    groups = sampler.run(
        [examples[i] for i in mine],
        t.num_rollout_samples,
        seeds=[seeds[i] for i in mine],
        rollout=True,
    )
    generated = len(groups)
    if not t.dynamic_sampling:
        return groups, generated, 0
    kept = [g for g in groups if g.spread]
    dropped = [g for g in groups if not g.spread]
    rounds = 0
    while len(kept) < want and rounds < t.max_resample_rounds:
        rounds += 1
        more = sampler.run(stream.take(want - len(kept)), t.num_rollout_samples, rollout=True)
        generated += len(more)
        kept += [g for g in more if g.spread]
        dropped += [g for g in more if not g.spread]
    # Out of rounds: top up with flat groups (no policy gradient, KL and SFT still act).
    return (kept + dropped)[:want], generated, len(dropped)
