"""Pluggable GRPO rewards: the registry, the weighted reward set, and the built-ins.

Importing this package registers every built-in reward (see docs/rl-rewards.md):
``format_structure`` (alias ``tag_structure``), ``thinking_quality``,
``response_length_penalty``, ``answer_quality``, ``semantic_similarity``,
``steps_coverage``, ``exact_match``, ``numeric_match``, ``mcq_accuracy`` and
``code_execution``. User rewards register themselves the same way, from the files or
modules named in a config's ``reward_sources`` (:func:`load_reward_sources`).
"""

from mlharness.rl.rewards.base import (
    BaseReward,
    RewardContext,
    RewardRegistry,
    RewardScores,
    RewardSet,
    load_reward_sources,
)
from mlharness.rl.rewards.code import CodeExecution, extract_code
from mlharness.rl.rewards.content import AnswerQuality, SemanticSimilarity, StepsCoverage
from mlharness.rl.rewards.format import FormatStructure, ResponseLengthPenalty, ThinkingQuality
from mlharness.rl.rewards.match import ExactMatch, MCQAccuracy, NumericMatch, parse_choice
from mlharness.rl.rewards.text import Regions, count_words, extract_numbers, split_regions

__all__ = [
    "AnswerQuality",
    "BaseReward",
    "CodeExecution",
    "ExactMatch",
    "FormatStructure",
    "MCQAccuracy",
    "NumericMatch",
    "Regions",
    "ResponseLengthPenalty",
    "RewardContext",
    "RewardRegistry",
    "RewardScores",
    "RewardSet",
    "SemanticSimilarity",
    "StepsCoverage",
    "ThinkingQuality",
    "count_words",
    "extract_code",
    "extract_numbers",
    "load_reward_sources",
    "parse_choice",
    "split_regions",
]
