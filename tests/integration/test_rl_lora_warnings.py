"""Wrapping a policy with LoRA shows no third-party deprecation warning users cannot act on."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

pytest.importorskip("peft")
torch = pytest.importorskip("torch")

from mlharness.rl.policy import add_lora, load_policy  # noqa: E402
from mlharness.rl.tiny_models import build_tiny_model  # noqa: E402


def test_lora_wrapping_is_quiet(tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "tiny", n_layer=1, n_embd=16, n_head=2, seed=0)
    policy = load_policy(model, device=torch.device("cpu"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        add_lora(policy, rank=2, alpha=4, dropout=0.0, targets=None)
    assert policy.uses_lora
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
