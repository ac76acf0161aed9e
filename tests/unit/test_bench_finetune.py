"""bench/finetune.py: the same windows, adapters and settings on both sides, and its figures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.append(str(BENCH))  # bench/finetune.py imports its siblings grpo.py, lm.py, report.py
spec = importlib.util.spec_from_file_location("bench_finetune", BENCH / "finetune.py")
assert spec is not None and spec.loader is not None
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_finetune"] = bench
spec.loader.exec_module(bench)


def test_windows_are_the_trainers_batches_in_its_order(tmp_path: Path) -> None:
    from mlharness.lm.trainer import TokenBatches

    data = (np.arange(3000) * 7919 % 2048).astype(np.uint16)
    data.tofile(tmp_path / "train.bin")
    batches = TokenBatches(tmp_path / "train.bin", "uint16", bench.BLOCK, torch.device("cpu"))

    windows = bench.step_windows(batches, steps=3)

    # The trainer's batch generator: seeded with train.seed, one draw of BATCH starts a step.
    gen = torch.Generator().manual_seed(bench.SEED)
    starts = [torch.randint(len(data) - bench.BLOCK, (bench.BATCH,), generator=gen) for _ in "abc"]
    expected = [data[s : s + bench.BLOCK + 1] for s in torch.cat(starts).tolist()]
    assert windows.shape == (3 * bench.BATCH, bench.BLOCK + 1)
    assert np.array_equal(windows, np.stack(expected))


def test_trls_adapters_start_as_ours(tmp_path: Path) -> None:
    """Every adapter of TRL's PEFT model finds ours under peft_key, and takes its values."""
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    from mlharness.lm import hf_model
    from mlharness.lm.model import GPTConfig

    config = GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=32, vocab_size=50)
    ours = hf_model.HFModel(GPT2LMHeadModel(config), GPTConfig(n_layer=2, n_embd=16, n_head=2))
    hf_model.add_lora_layers(ours, bench.LORA)
    state = hf_model.model_state(ours)
    checkpoint = tmp_path / "ckpt_last_00000000"
    checkpoint.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(checkpoint / "model.safetensors"))

    lora = bench.LORA
    theirs = get_peft_model(
        GPT2LMHeadModel(config),
        LoraConfig(
            r=lora["r"],
            lora_alpha=lora["alpha"],
            target_modules=lora["target_modules"],
            task_type="CAUSAL_LM",
            fan_in_fan_out=True,
        ),
    )
    assert bench._copy_adapters(theirs, str(checkpoint)) == len(state)
    for name, param in theirs.named_parameters():
        if "lora_" in name:
            assert torch.equal(param, state[bench.peft_key(name)])


def test_our_config_is_valid_and_matches_the_trl_settings(tmp_path: Path) -> None:
    from mlharness.lm.config import lm_config_from_raw

    raw = bench.our_config(tmp_path, steps=5, threads=2, runs_dir=tmp_path / "runs")
    config = lm_config_from_raw(raw, tmp_path, strict=True)
    t = config.train
    assert (t.batch_size, config.model.block_size, t.max_iters) == (bench.BATCH, bench.BLOCK, 5)
    assert (t.learning_rate, t.decay_lr, t.warmup_iters) == (bench.LEARNING_RATE, False, 0)
    assert (t.beta1, t.beta2, t.weight_decay, t.grad_clip) == (0.9, 0.999, 0.0, 1.0)
    assert (t.dtype, t.gradient_checkpointing, t.seed) == ("float32", False, bench.SEED)
    assert config.lora is not None and config.lora.model_dump() == bench.LORA
    assert t.checkpointing.keep.last >= 2  # the initial checkpoint outlives the final one


def test_step_figures_leave_out_the_warm_up_step() -> None:
    figures = bench.step_figures([30.0, 10.0, 12.0, 11.0], tokens_per_step=2048)
    assert figures["s_per_step"] == 11.0
    assert figures["tokens_per_sec"] == pytest.approx(2048 / 11.0)
    assert figures["sum_step_s"] == 63.0
    assert figures["steps"] == 4


def test_trl_losses_compare_per_target() -> None:
    trl_logged = [10.0 * 256 / 257, 9.0 * 256 / 257]
    trl = bench.per_target(trl_logged, divisor=257)
    assert trl == pytest.approx([10.0, 9.0])
    gap = bench.loss_gap([10.0, 9.001], trl)
    assert gap["steps"] == 2
    assert gap["max_abs"] == pytest.approx(0.001)
    assert gap["first_abs"] == pytest.approx(0.0, abs=1e-12)
    assert bench.loss_gap([], []) == {
        "steps": 0,
        "max_abs": None,
        "max_rel": None,
        "first_abs": None,
    }


def test_final_evaluation_is_timed_from_the_last_step_record() -> None:
    records = [
        (10.0, {"iter": 1, "loss": 3.0, "step_time_ms": 9000.0}),
        (19.0, {"iter": 2, "loss": 2.9, "step_time_ms": 9000.0}),
        (25.5, {"iter": 2, "val_loss": 2.95, "eval/train_loss": 2.9}),
    ]
    assert bench.final_eval_seconds(records) == pytest.approx(6.5)
    assert bench.final_eval_seconds(records[:2]) is None
