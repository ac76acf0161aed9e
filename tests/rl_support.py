"""Tiny GRPO experiments shared by the rl integration tests: models, prompts, rewards, configs.

Everything is real and offline: a random Hugging Face model saved with ``save_pretrained``
(``mlharness.rl.tiny_models``) or a GPT from a short ``lm`` run, JSONL prompt files, and a
reward file loaded through ``reward_sources`` as a user's would be.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mlharness.config import deep_merge

# "a+b=" -> the digits of a+b: digits and '+'/'=' are in tiny_models' character vocabulary.
ARITHMETIC = [(f"{a}+{b}=", str(a + b)) for a, b in [(3, 4), (1, 2), (5, 2), (2, 6), (4, 4)]]

REWARDS_FILE = Path(__file__).with_name("rl_rewards.py")  # char_share, constant


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any] | str]) -> Path:
    """One JSON object (or a raw string, for broken lines) per line."""
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def arithmetic_rows(n: int = 5) -> list[dict[str, str]]:
    return [{"prompt": p, "completion": c} for p, c in (ARITHMETIC * n)[:n]]


def base_config(workspace: Path, model_path: Path, train_path: Path) -> dict[str, Any]:
    """A GRPO run that takes a second or two on one CPU thread; deep-merge overrides on top."""
    return {
        "name": "grpo",
        "trainer": {
            "output_dir": str(workspace / "runs"),
            "num_training_steps": 2,
            "learning_rate": 1e-3,
            # No weight decay: a parameter then changes only if its gradient is non-zero,
            # which is what "every parameter changed" and the routing tests assert.
            "optimizer_weight_decay": 0.0,
            "ppo_batch_size": 2,
            "num_rollout_samples": 4,
            "grpo_beta": 0.04,
            "seed": 0,
            "device": "cpu",
            "num_threads": 1,
        },
        "model": {"model_path": str(model_path)},
        "generation": {"temperature": 1.0},
        "data": {"train_path": str(train_path), "max_prompt_len": 8, "max_gen_len": 6},
        "reward_sources": [str(REWARDS_FILE)],
        "rewards": [
            {"name": "numeric_match", "weight": 1.0},
            {"name": "char_share", "weight": 1.0},
        ],
        "monitoring": {"log_samples_every": 1, "max_logged_samples": 3},
        "checkpointing": {"save_every": 1, "keep_last_n": 2},
    }


def rl_config(
    workspace: Path, model_path: Path, train_path: Path, overrides: Mapping[str, Any] | None = None
) -> Any:
    """A validated ``RLConfig``: :func:`base_config` with ``overrides`` deep-merged."""
    from mlharness.rl.config import rl_config_from_raw

    raw = deep_merge(base_config(workspace, model_path, train_path), dict(overrides or {}))
    return rl_config_from_raw(raw, workspace)
