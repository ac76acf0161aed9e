"""bench/lm.py: the whole-val-split loss both sides' final models are compared on."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.append(str(BENCH))  # bench/lm.py imports its sibling report.py
spec = importlib.util.spec_from_file_location("bench_lm", BENCH / "lm.py")
assert spec is not None and spec.loader is not None
bench_lm = importlib.util.module_from_spec(spec)
sys.modules["bench_lm"] = bench_lm  # its dataclasses look their module up there
spec.loader.exec_module(bench_lm)


def test_every_window_is_scored_once_and_weighted_by_its_tokens() -> None:
    data = (np.arange(23) * 7 % 11).astype(np.uint16)
    seen: list[torch.Tensor] = []

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert x.is_contiguous() and y.is_contiguous()
        assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token
        seen.append(x)
        return y.float().mean()

    # (23 - 1) // 4 = 5 windows, in batches of 2, 2 and 1: the last, smaller batch must
    # count for its tokens only.
    result = bench_lm.whole_split_loss(loss, data, block_size=4, batch_size=2)
    assert [len(x) for x in seen] == [2, 2, 1]
    starts = torch.cat(seen)[:, 0].tolist()
    assert starts == [int(data[s]) for s in (0, 4, 8, 12, 16)]
    assert result == float(np.mean(data[1:21]))


def test_a_model_scores_its_mean_cross_entropy() -> None:
    from mlharness.lm.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=13)).eval()
    data = torch.randint(13, (8 * 6 + 1,), dtype=torch.int32).numpy().astype(np.uint16)
    result = bench_lm.whole_split_loss(lambda x, y: model(x, y)[1], data, block_size=8)
    t = torch.from_numpy(data.astype(np.int64))
    x, y = t[:-1].view(6, 8), t[1:].view(6, 8)
    with torch.no_grad():
        logits, _ = model(x, all_logits=True)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 13), y.reshape(-1))
    assert abs(result - float(expected)) < 1e-6


def test_the_compiled_run_reports_its_first_step_apart_from_the_median(
    monkeypatch: Any, tmp_path: Path
) -> None:
    """nanoGPT's first compiled step is its compile: shown on its own, out of the median."""
    commands: list[list[str]] = []
    envs: list[dict[str, str]] = []
    times = [18_539.9] + [40.0 + i % 3 for i in range(1, 300)]
    lines = [
        (0.1 * i, f"iter {i}: loss 4.0000, time {ms:.2f}ms, mfu -100.00%")
        for i, ms in enumerate(times)
    ]
    lines.append((31.0, "step 300: train loss 2.5000, val loss 2.5100"))

    def fake_run(cmd: list[str], **kwargs: Any) -> Any:
        commands.append(cmd)
        envs.append(kwargs["env"])
        return bench_lm.ChildRun(returncode=0, wall_seconds=31.5, lines=lines)

    monkeypatch.setattr(bench_lm, "run_child", fake_run)
    result = bench_lm.nanogpt_train_compiled(tmp_path / "nanogpt", tmp_path)
    (cmd,) = commands
    assert [a for a in cmd if a.startswith("--compile")] == ["--compile=True"]
    assert "--max_iters=300" in cmd
    # its compile is timed from an empty cache, not one an earlier run left in /tmp
    assert envs[0]["TORCHINDUCTOR_CACHE_DIR"].startswith(str(tmp_path))
    assert result["first_step_seconds"] == pytest.approx(18.5399)
    assert result["ms_per_iter"] == 41.0  # iterations 10 to 299, the compile left out
    assert result["final_val_loss"] == 2.51
