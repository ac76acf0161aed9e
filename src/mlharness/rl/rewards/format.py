"""Rewards for the shape of a completion: its think/answer structure and its length.

They need no reference, so they work on any prompt, and they are what a small policy
learns first: a reliable structure is what makes the answer region (and every reward that
reads it) meaningful.
"""

from __future__ import annotations

from typing import Any, ClassVar

from mlharness.rl.rewards.base import BaseReward, RewardContext, RewardRegistry
from mlharness.rl.rewards.text import content_words, count_words, split_regions


def ramp(x: float, low: float, high: float) -> float:
    """0 at ``low``, 1 at ``high``, linear between, clipped (1 when ``high <= low``)."""
    if high <= low:
        return 1.0 if x >= high else 0.0
    return min(1.0, max(0.0, (x - low) / (high - low)))


@RewardRegistry.register("tag_structure")  # seed 002's other name for it
@RewardRegistry.register("format_structure")  # applied first: the name in its messages
class FormatStructure(BaseReward):
    """How well a completion follows ``<think> reasoning </think> answer``.

    Half the score is the tag structure, a quarter the thinking's length, a quarter the
    answer's presence:

    - structure: 1.0 for exactly one opening tag at the start and one closing tag after
      it; 0.75 for a closing tag whose opening tag is missing (chat templates often put it
      into the prompt); 0.5 for repeated tags or text before the opening tag; 0.25 for a
      block that is opened and never closed; 0.0 without tags. Tags are matched leniently
      (``<Think>``, ``< think >``), so a near-miss is structure, not garbage.
    - thinking length, in words: rises to 0.5 at ``min_think_length``, to 1.0 at
      ``think_length_target_min``, stays 1.0 up to ``think_length_target_max``, then falls
      slowly to 0.5 at twice that (length proper is ``thinking_quality``'s concern).
    - answer: words after the closing tag over ``min_answer_length``, capped at 1; 0 when
      the thinking is never closed.

    Empty text scores 0. The tags come from the context (``generation.think_*_tag``).

    Options: ``min_think_length`` (10), ``min_answer_length`` (2),
    ``think_length_target_min`` (40), ``think_length_target_max`` (90).

    >>> r = FormatStructure({"min_think_length": 2, "think_length_target_min": 3,
    ...                      "think_length_target_max": 10, "min_answer_length": 1})
    >>> r.compute(RewardContext("<think>two plus two makes four</think> 4"))["reward"]
    1.0
    >>> r.compute(RewardContext("4"))["reward"]
    0.0
    """

    defaults: ClassVar[dict[str, Any]] = {
        "min_think_length": 10,
        "min_answer_length": 2,
        "think_length_target_min": 40,
        "think_length_target_max": 90,
    }

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.min_think = self.integer("min_think_length", minimum=0)
        self.min_answer = self.integer("min_answer_length", minimum=0)
        self.target_min = self.integer("think_length_target_min", minimum=0)
        self.target_max = self.integer("think_length_target_max", minimum=1)
        self.ordered("min_think_length", self.min_think, "think_length_target_min", self.target_min)
        self.ordered(
            "think_length_target_min", self.target_min, "think_length_target_max", self.target_max
        )

    def compute(self, context: RewardContext) -> dict[str, Any]:
        self.validate_inputs(context)
        text = context.generated_text
        if not text.strip():
            return {"reward": 0.0, "structure": 0.0}
        r = split_regions(text, context.think_start_tag, context.think_end_tag)
        if r.well_formed:
            structure = 1.0
        elif r.closed and r.start_count == 0 and r.end_count == 1:
            structure = 0.75
        elif r.closed:
            structure = 0.5
        elif r.has_tags:
            structure = 0.25
        else:
            structure = 0.0
        think_words, answer_words = count_words(r.thinking), count_words(r.answer)
        think = self._think_length(think_words)
        if not r.closed:
            answer = 0.0
        elif self.min_answer == 0:
            answer = 1.0
        else:
            answer = min(1.0, answer_words / self.min_answer)
        reward = 0.5 * structure + 0.25 * think + 0.25 * answer
        return {
            "reward": reward,
            "structure": structure,
            "think_words": think_words,
            "answer_words": answer_words,
        }

    def _think_length(self, words: int) -> float:
        if words == 0:
            return 0.0
        if words < self.min_think:
            return 0.5 * words / self.min_think
        if words < self.target_min:
            return 0.5 + 0.5 * ramp(words, self.min_think, self.target_min)
        if words <= self.target_max:
            return 1.0
        return 1.0 - 0.5 * ramp(words, self.target_max, 2 * self.target_max)


@RewardRegistry.register("thinking_quality")
class ThinkingQuality(BaseReward):
    """The thinking block: long enough to reason, short of rambling, not repeating itself.

    ``(1 - repetition_weight) * length + repetition_weight * diversity``, where

    - length (words): rises linearly to 1.0 at ``target_length_min``, stays 1.0 up to
      ``target_length_max``, falls to 0.5 at ``excessive_length_threshold`` and on to 0 at
      twice that: GRPO policies left alone learn to think longer and longer;
    - diversity: the share of distinct word trigrams, which drops when a small model loops
      on one sentence, a failure the length score alone would reward.

    No thinking (no tags, or an empty block) scores 0; a block never closed gets half its
    score, because nothing after it counts as an answer. Empty text scores 0.

    Options: ``target_length_min`` (40), ``target_length_max`` (90),
    ``excessive_length_threshold`` (120), ``repetition_weight`` (0.3).

    >>> r = ThinkingQuality({"target_length_min": 4, "target_length_max": 10,
    ...                      "excessive_length_threshold": 20})
    >>> r.compute(RewardContext("<think>add the two numbers to get four</think> 4"))["reward"]
    1.0
    >>> r.compute(RewardContext("<think>hmm hmm hmm hmm hmm hmm</think> 4"))["reward"] < 0.8
    True
    """

    defaults: ClassVar[dict[str, Any]] = {
        "target_length_min": 40,
        "target_length_max": 90,
        "excessive_length_threshold": 120,
        "repetition_weight": 0.3,
    }

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.target_min = self.integer("target_length_min", minimum=1)
        self.target_max = self.integer("target_length_max", minimum=1)
        self.excessive = self.integer("excessive_length_threshold", minimum=1)
        self.repetition_weight = self.number("repetition_weight", minimum=0, maximum=1)
        self.ordered("target_length_min", self.target_min, "target_length_max", self.target_max)
        self.ordered(
            "target_length_max", self.target_max, "excessive_length_threshold", self.excessive
        )

    def compute(self, context: RewardContext) -> dict[str, Any]:
        self.validate_inputs(context)
        r = split_regions(context.generated_text, context.think_start_tag, context.think_end_tag)
        words = r.thinking.split()
        if not words:
            return {"reward": 0.0, "think_words": 0}
        n = len(words)
        if n < self.target_min:
            length = n / self.target_min
        elif n <= self.target_max:
            length = 1.0
        elif n <= self.excessive:
            length = 1.0 - 0.5 * ramp(n, self.target_max, self.excessive)
        else:
            length = 0.5 - 0.5 * ramp(n, self.excessive, 2 * self.excessive)
        diversity = distinct_ratio(content_words(r.thinking) or words)
        reward = (1 - self.repetition_weight) * length + self.repetition_weight * diversity
        if r.unclosed:
            reward *= 0.5
        return {"reward": reward, "think_words": n, "length": length, "diversity": diversity}


def distinct_ratio(words: list[str], n: int = 3) -> float:
    """Distinct n-grams over all n-grams (distinct words for texts shorter than n)."""
    if len(words) < n:
        return len(set(words)) / len(words) if words else 0.0
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams)


@RewardRegistry.register("response_length_penalty")
class ResponseLengthPenalty(BaseReward):
    """Penalizes responses that exceed a maximum word count (seed 002's example reward).

    1.0 up to ``max_words`` words (the whole completion, thinking included), then
    ``penalty_per_word`` less for each word over, down to 0. Unlike the seed's version,
    empty text scores 0: a length penalty that paid full reward for saying nothing would
    teach exactly that. It does not judge shortness; pair it with a content reward.

    Options: ``max_words`` (150), ``penalty_per_word`` (0.005).

    >>> r = ResponseLengthPenalty({"max_words": 3, "penalty_per_word": 0.25})
    >>> r.compute(RewardContext("one two three"))["reward"]
    1.0
    >>> r.compute(RewardContext("one two three four five"))["reward"]
    0.5
    """

    defaults: ClassVar[dict[str, Any]] = {"max_words": 150, "penalty_per_word": 0.005}

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.max_words = self.integer("max_words", minimum=0)
        self.penalty_per_word = self.number("penalty_per_word", minimum=0)

    def compute(self, context: RewardContext) -> dict[str, Any]:
        self.validate_inputs(context)
        words = count_words(context.generated_text)
        if words == 0:
            return {"reward": 0.0, "words": 0}
        excess = max(0, words - self.max_words)
        return {"reward": max(0.0, 1.0 - excess * self.penalty_per_word), "words": words}
