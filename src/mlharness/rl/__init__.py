"""GRPO reinforcement learning of language models with pluggable rewards."""
