"""User rewards for the rl integration tests, loaded through ``reward_sources`` as a user's are.

Exact-match rewards are 0 for every completion of a random model, so their groups are flat
and teach nothing. ``char_share`` (the share of a completion's characters that are in
``chars``) has a spread on random text, so every group carries a policy gradient, except
prompts whose ``meta`` says ``flat``: those score 0.5 whatever the completion. ``constant``
makes every group flat: zero advantages, no policy gradient at all.
"""

from __future__ import annotations

from typing import Any

from mlharness.rl.rewards import BaseReward, RewardContext, RewardRegistry


@RewardRegistry.register("char_share")
class CharShare(BaseReward):
    """Share of the completion's characters in ``chars`` (default: digits); 0.5 if meta.flat.

    >>> CharShare({}).compute(RewardContext("a1b2"))
    {'reward': 0.5}
    """

    def compute(self, context: RewardContext) -> dict[str, Any]:
        if context.meta.get("flat"):
            return {"reward": 0.5}
        chars = str(self.config.get("chars", "0123456789"))
        text = context.generated_text
        return {"reward": sum(ch in chars for ch in text) / len(text) if text else 0.0}


@RewardRegistry.register("constant")
class Constant(BaseReward):
    """1.0 for anything."""

    def compute(self, context: RewardContext) -> dict[str, Any]:
        return {"reward": 1.0}
