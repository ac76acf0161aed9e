"""The lm and rl engines on a CUDA GPU: training in bfloat16 and float32, a crashed run that
resumes bit-identically, the KV-cache decode against the full forward, a GRPO run, and an
export of a GPU-trained run that loads on a machine without one.

Every test is marked ``cuda``: it skips where torch sees no CUDA GPU (tests/conftest.py), and
``bench/gpu_check.sh`` runs them on one (``pytest -m cuda``). The models are the tiny ones of
the CPU tests, so the whole file takes seconds on a GPU.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# cuBLAS is deterministic only with a fixed workspace, read when its handle is made: before
# any test of this process touches the GPU (collection imports this module first).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).parents[1]))

from mlharness.lm import checkpoints as ckpt  # noqa: E402
from mlharness.lm.model import GPT, GPTConfig, KVCache, plain_decode_step  # noqa: E402
from mlharness.lm.trainer import Trainer, iter_records, train  # noqa: E402
from mlharness.runs import checkpoints as run_ckpt  # noqa: E402

pytestmark = pytest.mark.cuda

DEVICE = "cuda"  # the device every test here runs on


def on_gpu(dtype: str = "float32", **train_overrides: Any) -> dict[str, Any]:
    """Overrides of conftest's tiny lm config for a run on the GPU."""
    return {"train": {"device": DEVICE, "dtype": dtype, **train_overrides}}


def last_weights(run_dir: Path) -> dict[str, Any]:
    last = run_ckpt.list_checkpoints(run_dir / "checkpoints", "last")[-1]
    return ckpt.load_weights(last.path)


@pytest.fixture
def deterministic() -> Iterator[None]:
    """cuBLAS, SDPA and the embedding's backward in their deterministic algorithms."""
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False)


# ----------------------------------------------------------------------------- lm


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_lm_trains_on_the_gpu(tiny_lm: Any, dtype: str) -> None:
    cfg = tiny_lm(on_gpu(dtype))
    trainer = Trainer(cfg, fresh=True, progress=False)
    assert trainer.device.type == DEVICE
    x, y = trainer.train_data.batch(trainer.train_data.starts(4, torch.Generator()))
    assert x.device.type == DEVICE
    with trainer.autocast():
        logits, _ = trainer.model(x, y)
    assert logits.dtype == getattr(torch, dtype)  # bfloat16: the matmuls ran in it
    result = trainer.fit()

    assert result.status == "completed"
    losses = [r["loss"] for r in iter_records(result.run_dir) if "loss" in r]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert result.final_metrics["val_loss"] < 3.6  # from ~ln(vocab) = 4.1 at init
    weights = last_weights(result.run_dir)  # read back onto the CPU
    assert all(w.dtype == torch.float32 and w.device.type == "cpu" for w in weights.values())


def test_a_crashed_gpu_run_resumes_bit_identically(
    tiny_lm: Any, monkeypatch: pytest.MonkeyPatch, deterministic: None
) -> None:
    cfg = tiny_lm(on_gpu("float32"))
    reference = train(cfg, fresh=True, progress=False)

    original = Trainer._step
    calls = {"n": 0}

    def crashing(self: Trainer, lr: float) -> Any:
        calls["n"] += 1
        if calls["n"] == 13:
            raise RuntimeError("simulated crash")
        return original(self, lr)

    monkeypatch.setattr(Trainer, "_step", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, fresh=True, progress=False)
    monkeypatch.setattr(Trainer, "_step", original)

    resumed = train(cfg, progress=False)  # the failed run, from its checkpoint at 10
    assert resumed.run_dir != reference.run_dir
    assert resumed.resumed_from is not None and resumed.resumed_from.name == "ckpt_last_00000010"
    a, b = last_weights(reference.run_dir), last_weights(resumed.run_dir)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("plain", [False, True], ids=["forward", "plain"])
def test_cached_decode_equals_the_full_forward_on_the_gpu(plain: bool) -> None:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=True)
    model = GPT(config).to(DEVICE).eval()
    idx = torch.randint(0, 50, (2, 14), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    cache = KVCache(config, batch_size=2, device=DEVICE)
    weights = model.plain_weights() if plain else None

    def step(chunk: Any) -> Any:
        if weights is not None:
            return plain_decode_step(chunk, cache, weights)
        return model(chunk, kv_cache=cache)[0][:, -1, :]

    with torch.no_grad():
        cached = step(idx[:, :3])
        torch.testing.assert_close(cached, model(idx[:, :3])[0][:, -1], atol=1e-4, rtol=0)
        for t in range(3, idx.size(1)):
            cached = step(idx[:, t : t + 1])
            torch.testing.assert_close(cached, model(idx[:, : t + 1])[0][:, -1], atol=1e-4, rtol=0)
    assert cache.length == idx.size(1)
    greedy = model.generate(idx[:, :4], 12, temperature=0.0)
    assert torch.equal(greedy, model.generate(idx[:, :4], 12, temperature=0.0, use_cache=False))


def test_export_of_a_gpu_trained_run_loads_on_the_cpu(
    tiny_lm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from export_support import load_cleanly
    from mlharness.lm.export import export
    from mlharness.lm.sampler import load_model

    cfg = tiny_lm(on_gpu("bfloat16", max_iters=10))
    run = train(cfg, fresh=True, progress=False).run_dir
    result = export(run, "hf", say=lambda _: None)
    ours, _ = load_model(result.checkpoint, torch.device("cpu"))
    ids = torch.randint(0, ours.config.vocab_size, (2, 16), generator=torch.Generator())
    with torch.no_grad():
        expected = ours(ids, all_logits=True)[0]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the loading interpreter sees no GPU
    answer = load_cleanly(result.out, ids=ids.tolist())
    assert (torch.tensor(answer["logits"]) - expected).abs().max().item() < 1e-5


# ----------------------------------------------------------------------------- rl


def test_a_grpo_run_trains_on_the_gpu(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    from mlharness.rl import trainer as rl_trainer
    from mlharness.rl.tiny_models import build_tiny_model
    from mlharness.runs.metrics import MetricsWriter
    from rl_support import arithmetic_rows, rl_config, write_jsonl

    monkeypatch.setattr(rl_trainer, "MetricsWriter", functools.partial(MetricsWriter, plot=False))
    model = build_tiny_model(workspace / "gpt2", arch="gpt2")
    prompts = write_jsonl(workspace / "train.jsonl", arithmetic_rows(5))
    config = rl_config(workspace, model, prompts, {"trainer": {"device": DEVICE}})
    trainer = rl_trainer.GRPOTrainer(config, progress=False)
    params = dict(trainer.policy.model.named_parameters())
    assert all(p.device.type == DEVICE for p in params.values())
    before = {n: p.detach().clone() for n, p in params.items() if p.requires_grad}
    result = trainer.fit()

    assert result.status == "completed"
    changed = {n for n, p in before.items() if not torch.equal(p, params[n].detach())}
    assert changed == set(before)  # every parameter got a gradient and moved
    lines = (result.run_dir / "metrics" / "metrics.ndjson").read_text().splitlines()
    steps = [r for r in map(json.loads, lines) if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(math.isfinite(r["policy_loss"]) and math.isfinite(r["kl"]) for r in steps)
