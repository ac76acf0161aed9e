"""GRPO from an lm run that fine-tuned a Hugging Face model (the SFT step before RL): the
policy is the run's model (a LoRA run's adapters merged) with the run's tokenizer."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from mlharness.errors import CheckpointError  # noqa: E402
from mlharness.lm import sampler  # noqa: E402
from mlharness.lm.config import load_lm_config  # noqa: E402
from mlharness.lm.prepare import prepare_data  # noqa: E402
from mlharness.lm.trainer import train as lm_train  # noqa: E402
from mlharness.rl import trainer as rl_trainer  # noqa: E402
from mlharness.rl.policy import load_policy  # noqa: E402
from mlharness.rl.tiny_models import build_tiny_model  # noqa: E402
from mlharness.rl.trainer import GRPOTrainer  # noqa: E402
from mlharness.runs.metrics import MetricsWriter  # noqa: E402
from rl_support import arithmetic_rows, rl_config, write_jsonl  # noqa: E402
from sft_support import sft_config, write_pairs  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def no_curves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rl_trainer, "MetricsWriter", functools.partial(MetricsWriter, plot=False))


def _sft_run(workspace: Path, **extra: Any) -> Path:
    model_dir = build_tiny_model(workspace / "model", chat_template=True)
    pairs = write_pairs(workspace / "pairs.jsonl", n=40)
    fast = {"train": {"max_iters": 6, "eval_interval": 3, "learning_rate": 1e-2}}
    overrides = sft_config(model_dir, pairs, **fast, **extra)
    cfg = load_lm_config(None, "sft", overrides=overrides)
    prepare_data(cfg, None, progress=False)
    return lm_train(cfg, progress=False).run_dir


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(input_ids=ids).logits
    return out


def test_grpo_trains_a_fully_fine_tuned_run(workspace: Path) -> None:
    run = _sft_run(workspace)
    policy = load_policy(run, device=CPU, trainable=False)
    assert policy.kind == "hf" and not policy.uses_lora
    # The run's best checkpoint's weights, and GRPO's prompt format is the SFT data's.
    tuned, _ = sampler.load_model(sampler_pick(run), CPU)
    ids = torch.tensor([policy.tokenizer.encode(policy.tokenizer.format_prompt("1+2=", None))])
    assert torch.equal(_logits(policy.model, ids), tuned(ids, all_logits=True)[0])
    assert policy.tokenizer.format_prompt("1+2=", None) == "q 1+2=\na "

    prompts = write_jsonl(workspace / "prompts.jsonl", arithmetic_rows(4))
    grpo = GRPOTrainer(rl_config(workspace, run, prompts), progress=False)
    grpo.fit()
    last = grpo.run_dir / "checkpoints" / "ckpt_last_00000002"
    again = load_policy(last, device=CPU, trainable=False)  # a full model: stands alone
    trained = grpo.policy.model.state_dict()
    assert all(torch.equal(w, trained[k]) for k, w in again.model.state_dict().items())
    # Same weights, separate tensors: the matmuls may round differently (seen: 6e-8).
    torch.testing.assert_close(_logits(again.model, ids), _logits(grpo.policy.model, ids))

    meta = json.loads((run / "meta.json").read_text())
    meta["tokenizer"] = {"type": "char", "chars": "abc"}
    (run / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="on data prepared with another tokenizer"):
        load_policy(run, device=CPU)


def test_grpo_lora_on_a_lora_run_merges_it_and_reloads_its_adapters(workspace: Path) -> None:
    run = _sft_run(workspace, lora={"r": 4, "alpha": 16})
    policy = load_policy(run, device=CPU, trainable=False)
    assert not any("lora_" in n for n, _ in policy.model.named_parameters())  # merged
    tuned, _ = sampler.load_model(sampler_pick(run), CPU)  # the base with the adapters
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    torch.testing.assert_close(_logits(policy.model, ids), tuned(ids, all_logits=True)[0])

    prompts = write_jsonl(workspace / "prompts.jsonl", arithmetic_rows(4))
    config = rl_config(workspace, run, prompts, {"model": {"use_lora": True}})
    grpo = GRPOTrainer(config, progress=False)
    grpo.fit()
    last = grpo.run_dir / "checkpoints" / "ckpt_last_00000002"
    # GRPO's adapter names the lm checkpoint as its base, and loads on it again.
    again = load_policy(last, device=CPU, trainable=False)
    assert again.uses_lora
    torch.testing.assert_close(_logits(again.model, ids), _logits(grpo.policy.model, ids))


def sampler_pick(run: Path) -> Path:
    from mlharness.runs import checkpoints as run_ckpt

    return run_ckpt.pick_for_sampling(run / "checkpoints").path
