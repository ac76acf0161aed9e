"""Every user-facing error of the lm trainer and sampler says what was wrong and what to do."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from mlharness.errors import CheckpointError, ConfigError, RunDirectoryError  # noqa: E402
from mlharness.lm import sampler, trainer  # noqa: E402
from mlharness.lm.model import GPT, GPTConfig  # noqa: E402
from mlharness.runs import checkpoints as run_ckpt  # noqa: E402
from mlharness.runs.device import Dist, resolve_device  # noqa: E402


def test_unavailable_devices_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"train.device is 'cuda' but no CUDA device"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"train.device is 'mps' but MPS is not available"):
        resolve_device("mps")
    assert resolve_device("auto").type == "cpu"


def test_accumulation_must_divide_among_processes(
    tiny_lm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_lm({"train": {"grad_accum_steps": 3}})
    monkeypatch.setattr(trainer, "init_distributed", lambda _: Dist(0, 0, 2))
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
    # A live process holds the run's lock, as the process training it does.
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        summary = json.loads((run / "summary.json").read_text())
        summary.update(status="running", pid=holder.pid, host=platform.node())
        (run / "summary.json").write_text(json.dumps(summary))
        with pytest.raises(RunDirectoryError) as info:
            trainer.train(cfg, progress=False)
        assert str(info.value) == (
            f"Run {run} is still being trained by process {holder.pid}. Wait for it or stop "
            "it, or pass --fresh to start a separate run."
        )
        assert trainer.train(cfg, fresh=True, progress=False).run_dir != run
    finally:
        holder.kill()
        holder.wait(timeout=60)
    # Its owner gone (SIGKILL drops the lock), the run resumes.
    result = trainer.train(cfg, progress=False)
    assert result.run_dir == run and result.resumed_from is not None


HOLD_LOCK = """
import sys, time
from pathlib import Path
from mlharness.runs import recovery
assert recovery.hold_lock(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(120)
"""


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    small = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=10))
    other = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=8, vocab_size=10))
    with pytest.raises(CheckpointError, match=r"has shape \(10, 32\) but the model expects"):
        run_ckpt.load_into(small, other.state_dict())
    deeper = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=10))
    with pytest.raises(CheckpointError, match=r"holds tensors this model does not have: h.1"):
        run_ckpt.load_into(small, deeper.state_dict())


def test_sampling_inputs_are_checked(tiny_lm: Any, tmp_path: Path) -> None:
    cfg = tiny_lm({"train": {"max_iters": 5}})
    with pytest.raises(ConfigError, match=r"names .*missing.txt, which does not exist"):
        sampler.start_text(f"FILE:{tmp_path / 'missing.txt'}")
    with pytest.raises(ConfigError) as info:  # the point once: not the path twice
        sampler.start_text(f"FILE:{tmp_path}")
    assert (
        str(info.value) == f"sample.start names {tmp_path}, which cannot be read (is a directory)."
    )
    with pytest.raises(ConfigError, match="'FILE:' without a path"):
        sampler.start_text("FILE:")
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
