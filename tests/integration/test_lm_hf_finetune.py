"""lm runs that fine-tune a local Hugging Face model (init_from = "hf:PATH"), fully or with
LoRA adapters, and LoRA on our own GPT: the same trainer, with a model from elsewhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from hf_lm_support import finetune_config, hf_model_dir, tiny_text  # noqa: E402
from lm_support import TINY_LM  # noqa: E402
from mlharness.config import deep_merge  # noqa: E402
from mlharness.errors import ConfigError, DatasetError  # noqa: E402
from mlharness.lm import checkpoints as ckpt  # noqa: E402
from mlharness.lm import evaluate as lm_eval  # noqa: E402
from mlharness.lm import sampler  # noqa: E402
from mlharness.lm.config import load_lm_config  # noqa: E402
from mlharness.lm.prepare import prepare_data  # noqa: E402
from mlharness.lm.trainer import Trainer, iter_records, train  # noqa: E402


def _config(workspace: Path, model_dir: Path, **extra: Any) -> Any:
    corpus = workspace / "corpus.txt"
    if not corpus.is_file():
        corpus.write_text(tiny_text(), encoding="utf-8")
    cfg = load_lm_config(None, "ft", overrides=finetune_config(model_dir, corpus, **extra))
    prepare_data(cfg, None, progress=False)
    return cfg


def _val_losses(run_dir: Path) -> list[float]:
    return [r["val_loss"] for r in iter_records(run_dir) if "val_loss" in r]


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_full_fine_tuning_lowers_val_loss_and_samples_as_transformers(
    workspace: Path, arch: str
) -> None:
    from transformers import AutoModelForCausalLM

    model_dir = hf_model_dir(workspace / "model", arch)
    cfg = _config(workspace, model_dir)
    result = train(cfg, progress=False)
    losses = _val_losses(result.run_dir)
    assert losses[-1] < losses[0] - 0.1, losses
    args = json.loads((result.run_dir / "config.json").read_text())["model_args"]
    assert args["hf_config"]["model_type"] == arch and args["block_size"] == 32
    # The checkpoint is the Hugging Face model's state dict under its own names.
    last = result.run_dir / "checkpoints" / "ckpt_last_00000020"
    weights = ckpt.load_weights(last)
    reference = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True)
    assert set(weights) <= set(reference.state_dict())
    reference.load_state_dict(weights, strict=False)
    # mlx sample's greedy tokens are transformers' greedy generate() on the same weights.
    model, _, tokenizer = sampler.load_for_sampling(result.run_dir, last, torch.device("cpu"))
    prompt = torch.tensor([tokenizer.encode("the king ")])
    ours = model.generate(prompt, 24, temperature=0)
    theirs = reference.generate(prompt, max_new_tokens=24, do_sample=False, pad_token_id=0)
    assert ours.tolist() == theirs.tolist()


def test_lora_trains_only_the_adapters(workspace: Path) -> None:
    model_dir = hf_model_dir(workspace / "model", "gpt2")
    fast = {"learning_rate": 3e-2, "min_lr": 3e-3, "eval_interval": 5}
    cfg = _config(workspace, model_dir, lora={"r": 4, "alpha": 32}, train=fast)
    trainer = Trainer(cfg, progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.fit()
    after = trainer.model.state_dict()
    changed = {k for k in before if not before[k].equal(after[k])}
    adapters = {k for k in before if "lora_" in k}
    assert changed == {k for k in adapters if "lora_B" in k} | {
        k for k in adapters if "lora_A" in k
    }
    losses = _val_losses(result.run_dir)
    assert losses[-1] < losses[0], losses
    # Checkpoints hold the adapters only; the run records them, with the default targets.
    stored = ckpt.load_weights(result.run_dir / "checkpoints" / "ckpt_last_00000020")
    assert stored and all("lora_" in k for k in stored)
    args = json.loads((result.run_dir / "config.json").read_text())["model_args"]
    assert args["lora"] == {
        "r": 4,
        "alpha": 32.0,
        "dropout": 0.0,
        "target_modules": ["c_attn", "c_proj", "c_fc"],
    }
    report = lm_eval.evaluate(result.run_dir, "ckpt_last_00000020")  # mlx eval's scoring
    assert abs(report["results"]["val"]["loss"] - losses[-1]) < 0.2, (report, losses)
    # Sampling rebuilds the base from the source and adds the trained adapters.
    model, _ = sampler.load_model(result.run_dir / "checkpoints" / "ckpt_last_00000020", "cpu")
    assert all(model.state_dict()[k].equal(v) for k, v in after.items())


def test_lora_on_our_gpt_changes_only_adapters(tiny_lm: Any, workspace: Path) -> None:
    source = train(tiny_lm({"train": {"max_iters": 10}}), progress=False).run_dir
    cfg = tiny_lm(
        deep_merge(
            {"init_from": f"run:{source}", "lora": {"r": 2}},
            {"model": {k: v for k, v in TINY_LM["model"].items()}, "train": {"max_iters": 10}},
        )
    )
    trainer = Trainer(cfg, progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    changed = {k for k in before if not before[k].equal(after[k])}
    assert changed and all("lora_" in k for k in changed)
    assert any(k.endswith("c_attn.base_layer.weight") for k in before)


def test_gradient_checkpointing_gives_the_same_training(workspace: Path) -> None:
    model_dir = hf_model_dir(workspace / "model", "llama")
    plain = train(_config(workspace, model_dir), progress=False, fresh=True)
    saved = train(
        _config(workspace, model_dir, train={"gradient_checkpointing": True}),
        progress=False,
        fresh=True,
    )
    assert _val_losses(saved.run_dir) == _val_losses(plain.run_dir)


def test_refusals(workspace: Path, tiny_lm: Any) -> None:
    model_dir = hf_model_dir(workspace / "model", "gpt2")
    char_data = tiny_lm({"init_from": f"hf:{model_dir}", "model": {"n_layer": 2}})
    with pytest.raises(DatasetError) as info:
        Trainer(char_data, progress=False)
    assert f"reads ids of the Hugging Face tokenizer in {model_dir}, but the data" in str(
        info.value
    )
    with pytest.raises(ConfigError, match="gradient_checkpointing is for Hugging Face models"):
        Trainer(tiny_lm({"train": {"gradient_checkpointing": True}}), progress=False)
    with pytest.raises(ConfigError, match=r"LoRA cannot adapt lora.target_modules \['nope'\]"):
        Trainer(_config(workspace, model_dir, lora={"target_modules": ["nope"]}), progress=False)
