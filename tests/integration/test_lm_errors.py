"""Every user-facing error of the lm trainer and sampler says what was wrong and what to do."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from mlharness.errors import CheckpointError, ConfigError, RunDirectoryError  # noqa: E402
from mlharness.lm import checkpoints as ckpt  # noqa: E402
from mlharness.lm import sampler, trainer  # noqa: E402
from mlharness.lm.model import GPT, GPTConfig  # noqa: E402


def test_unavailable_devices_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"train.device is 'cuda' but no CUDA device"):
        trainer.resolve_device("cuda")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"train.device is 'mps' but MPS is not available"):
        trainer.resolve_device("mps")
    assert trainer.resolve_device("auto").type == "cpu"


def test_accumulation_must_divide_among_processes(
    tiny_lm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_lm({"train": {"grad_accum_steps": 3}})
    monkeypatch.setattr(trainer, "init_distributed", lambda _: trainer.Dist(0, 0, 2))
    with pytest.raises(ConfigError, match=r"grad_accum_steps \(3\) must be a multiple of the"):
        trainer.Trainer(cfg, progress=False)


def test_compile_without_a_cpp_compiler_is_a_config_error(
    tiny_lm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    cfg = tiny_lm({"train": {"compile": True}})
    with pytest.raises(ConfigError, match=r"'no-such-c\+\+-compiler' was not found: install one"):
        trainer.Trainer(cfg, fresh=True, progress=False)
    assert not (cfg.output_dir / cfg.experiment).exists()  # nothing started


def test_a_run_still_in_progress_is_not_taken_over(tiny_lm: Any) -> None:
    cfg = tiny_lm({"train": {"max_iters": 5}})
    run = trainer.train(cfg, progress=False).run_dir
    summary = json.loads((run / "summary.json").read_text())
    # Pretend a live process (our parent) is still training it.
    summary.update(status="running", pid=os.getppid(), host=platform.node())
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(RunDirectoryError, match=r"is still being trained by process"):
        trainer.train(cfg, progress=False)
    assert trainer.train(cfg, fresh=True, progress=False).run_dir != run


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    small = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=10))
    other = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=8, vocab_size=10))
    with pytest.raises(CheckpointError, match=r"has shape \(10, 32\) but the model expects"):
        ckpt.load_into(small, other.state_dict())
    deeper = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=10))
    with pytest.raises(CheckpointError, match=r"holds tensors this model does not have: h.1"):
        ckpt.load_into(small, deeper.state_dict())


def test_sampling_inputs_are_checked(tiny_lm: Any, tmp_path: Path) -> None:
    cfg = tiny_lm({"train": {"max_iters": 5}})
    with pytest.raises(ConfigError, match=r"names .*missing.txt, which does not exist"):
        sampler.start_text(f"FILE:{tmp_path / 'missing.txt'}")
    with pytest.raises(CheckpointError, match=r"Run directory .*nowhere does not exist"):
        sampler.sample(cfg, run_dir=tmp_path / "nowhere")
    run = trainer.train(cfg, progress=False).run_dir
    (run / "meta.json").unlink()
    with pytest.raises(CheckpointError, match=r"has no meta.json, so its tokenizer is unknown"):
        sampler.sample(cfg, run_dir=run)
    empty = tmp_path / "empty_run"
    (empty / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"No checkpoint in .*: neither ckpt_best_"):
        sampler.sample(cfg, run_dir=empty)
