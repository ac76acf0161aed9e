"""GRPO with LoRA trains the same whether rollouts decode on folded weights (the plain
path) or through PEFT's forward: the same completions, rewards and adapter weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from mlharness.rl import policy as policy_mod  # noqa: E402
from mlharness.rl.tiny_models import build_tiny_model  # noqa: E402
from mlharness.rl.trainer import GRPOTrainer  # noqa: E402
from rl_support import arithmetic_rows, rl_config, write_jsonl  # noqa: E402

pytestmark = pytest.mark.integration


def lora_run(workspace: Path, name: str) -> tuple[GRPOTrainer, list[dict[str, Any]]]:
    model = build_tiny_model(workspace / "model", arch="gpt2")
    prompts = write_jsonl(workspace / "train.jsonl", arithmetic_rows(5))
    overrides = {
        "name": name,
        "model": {"use_lora": True},
        "trainer": {"num_training_steps": 3, "learning_rate": 0.05},
        "monitoring": {"log_samples_every": 0},
    }
    trainer = GRPOTrainer(rl_config(workspace, model, prompts, overrides), progress=False)
    records = [trainer.train_step() for _ in range(3)]
    return trainer, records


def test_folded_lora_rollouts_train_like_peft_rollouts(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fold = policy_mod._fold_lora
    folds: list[bool] = []

    def counted(core: Any, kind: Any) -> Any:
        weights = fold(core, kind)
        folds.append(weights is not None)
        return weights

    monkeypatch.setattr(policy_mod, "_fold_lora", counted)
    folded, folded_records = lora_run(workspace, "folded")
    assert folds == [True] * 3  # once per step: the weights change only at the update
    assert folded.policy._rollout is None  # freed by the last training forward
    monkeypatch.setattr(policy_mod, "_fold_lora", lambda core, kind: None)  # PEFT's forward
    peft, peft_records = lora_run(workspace, "peft")

    for a, b in zip(folded_records, peft_records, strict=True):
        assert a["completion_length"] == b["completion_length"]
        assert a["reward"] == pytest.approx(b["reward"], abs=1e-6)
    theirs = dict(peft.policy.model.named_parameters())
    for name, value in folded.policy.model.named_parameters():
        if "lora_" in name:
            torch.testing.assert_close(value, theirs[name], rtol=1e-4, atol=1e-5, msg=name)
