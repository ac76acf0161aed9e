"""Training, checkpoints, resume and sampling of the lm engine on tiny GPTs (CPU)."""

from __future__ import annotations

import itertools
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from mlharness.config import deep_merge  # noqa: E402
from mlharness.errors import CheckpointError, ConfigError, DatasetError  # noqa: E402
from mlharness.lm import checkpoints as ckpt  # noqa: E402
from mlharness.lm import config as lm_config  # noqa: E402
from mlharness.lm.sampler import sample  # noqa: E402
from mlharness.lm.trainer import Trainer, iter_records, learning_rate, train  # noqa: E402
from mlharness.runs import checkpoints as run_ckpt  # noqa: E402


def _weights(run_dir: Path) -> dict[str, Any]:
    last = run_ckpt.list_checkpoints(run_dir / "checkpoints", "last")[-1]
    return ckpt.load_weights(last.path)


def _crash_once(cfg: Any, monkeypatch: pytest.MonkeyPatch, at_step: int = 7) -> Path:
    """Train ``cfg`` until step ``at_step`` raises; the failed run's directory."""
    original = Trainer._step
    calls = {"n": 0}

    def crashing(self: Trainer, lr: float) -> Any:
        calls["n"] += 1
        if calls["n"] == at_step:
            raise RuntimeError("simulated crash")
        return original(self, lr)

    monkeypatch.setattr(Trainer, "_step", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, fresh=True, progress=False)
    monkeypatch.setattr(Trainer, "_step", original)
    return sorted((cfg.output_dir / cfg.experiment).iterdir())[-1]


def test_run_layout_metrics_and_checkpoints(tiny_lm: Any) -> None:
    cfg = tiny_lm({"train": {"checkpointing": {"keep": {"last": 2, "best": 1}}}})
    result = train(cfg, progress=False)
    run = result.run_dir
    assert result.status == "completed" and result.iterations == 20
    for name in (
        "config.json",
        "summary.json",
        "meta.json",
        "metrics/metrics.json",
        "metrics/metrics.ndjson",
        "metrics/metrics.md",
        "metrics/curves.png",
    ):
        assert (run / name).is_file(), name
    assert list((run / "logs" / "tb").glob("events.out.tfevents.*"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["final_metrics"]["val_loss"] == pytest.approx(result.final_metrics["val_loss"])
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert [n for n in names if n.startswith("ckpt_last_")] == [
        "ckpt_last_00000015",
        "ckpt_last_00000020",
    ]
    best = [n for n in names if n.startswith("ckpt_best_")]
    assert len(best) == 1 and best[0].startswith("ckpt_best_000000") and "_val_loss_" in best[0]
    records = list(iter_records(run))
    logged = [r for r in records if "loss" in r]
    evals = [r for r in records if "val_loss" in r]
    assert [r["iter"] for r in logged] == [5, 10, 15, 20]
    assert [r["iter"] for r in evals] == [10, 20]
    assert {"lr", "tokens_per_sec", "step_time_ms", "elapsed_s"} <= set(logged[0])
    assert evals[-1]["val_loss"] < 3.5  # from ~ln(vocab) = 4.1 at init


def test_first_checkpoint_is_written_right_after_init(tiny_lm: Any) -> None:
    cfg = tiny_lm(
        {
            "train": {
                "max_iters": 3,
                "eval_interval": 100,
                "checkpointing": {"interval": 100, "keep": {"last": 5}},
            }
        }
    )
    run = train(cfg, progress=False).run_dir
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "ckpt_last_00000000" in names and "ckpt_last_00000003" in names
    meta = ckpt.read_meta(run / "checkpoints" / "ckpt_last_00000000")
    assert meta["iter"] == 0 and meta["best_val_loss"] is None


def test_keep_zero_disables_each_kind(tiny_lm: Any) -> None:
    cfg = tiny_lm({"train": {"checkpointing": {"keep": {"last": 0, "best": 0}}}})
    run = train(cfg, progress=False).run_dir
    assert list((run / "checkpoints").iterdir()) == []


def test_cosine_schedule_with_warmup(tiny_lm: Any) -> None:
    cfg = tiny_lm(
        {"train": {"max_iters": 100, "warmup_iters": 10, "learning_rate": 1e-3, "min_lr": 1e-4}}
    )
    lrs = [learning_rate(i, cfg) for i in range(120)]
    assert lrs[0] == pytest.approx(1e-3 / 11)
    assert max(lrs) <= 1e-3 and lrs[10] == pytest.approx(1e-3)
    assert lrs[100] == lrs[119] == pytest.approx(1e-4)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:101]))

    # lr_decay_iters ends the decay early; min_lr holds from there on.
    cfg = tiny_lm({"train": {"max_iters": 100, "warmup_iters": 10, "lr_decay_iters": 50}})
    lrs = [learning_rate(i, cfg) for i in range(100)]
    assert lrs[49] > lrs[50] == lrs[99] == pytest.approx(cfg.train.min_lr)


@pytest.mark.parametrize("threads", [1, 2], ids=["one-thread", "thread-shards"])
def test_gradient_accumulation_equals_the_whole_batch(tiny_lm: Any, threads: int) -> None:
    """2 micro-batches of 4 make the step one batch of 8 makes (the same 8 windows)."""
    steps = []
    for batch, accum in ((8, 1), (4, 2)):
        cfg = tiny_lm(
            {"train": {"batch_size": batch, "grad_accum_steps": accum, "num_threads": threads}}
        )
        trainer = Trainer(cfg, fresh=True, progress=False)
        loss = trainer._step(1e-3)
        steps.append((float(loss), {k: v.clone() for k, v in trainer.model.state_dict().items()}))
        if trainer.shards is not None:
            trainer.shards.close()
    (loss_a, a), (loss_b, b) = steps
    assert loss_b == pytest.approx(loss_a, rel=1e-5)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("clip", [0.0, 1e-3])
def test_gradients_are_clipped_to_grad_clip(
    tiny_lm: Any, monkeypatch: pytest.MonkeyPatch, clip: float
) -> None:
    trainer = Trainer(tiny_lm({"train": {"grad_clip": clip}}), fresh=True, progress=False)
    norms: list[float] = []
    update = trainer.optimizer.step

    def step() -> None:
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        update()

    monkeypatch.setattr(trainer.optimizer, "step", step)
    trainer._step(1e-3)
    if clip:
        assert norms[0] == pytest.approx(clip, rel=1e-4)  # the raw norm is ~1 at init
    else:
        assert norms[0] > 0.1  # 0 switches clipping off


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": {"dropout": 0.1}},  # dropout draws from the RNG that is restored
        {"train": {"num_threads": 2}},  # the batch split across two threads
        {"model": {"dropout": 0.1}, "train": {"num_threads": 2}},  # a generator per slice
    ],
    ids=["dropout", "thread-shards", "thread-shards-dropout"],
)
def test_resume_after_a_crash_is_bit_identical(
    tiny_lm: Any, monkeypatch: pytest.MonkeyPatch, overrides: dict[str, Any]
) -> None:
    cfg = tiny_lm(overrides)
    reference = train(cfg, fresh=True, progress=False)
    crashed = _crash_once(cfg, monkeypatch, at_step=13)
    assert json.loads((crashed / "summary.json").read_text())["status"] == "failed"

    resumed = train(cfg, progress=False)  # picks up the failed run at iteration 10
    assert resumed.run_dir == crashed
    assert resumed.resumed_from is not None and resumed.resumed_from.name == "ckpt_last_00000010"
    a, b = _weights(reference.run_dir), _weights(resumed.run_dir)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    iters = [r["iter"] for r in iter_records(resumed.run_dir) if "loss" in r]
    assert iters == [5, 10, 15, 20]  # the records after the checkpoint were recomputed once


def test_thread_shards_compute_the_whole_batch(tiny_lm: Any) -> None:
    cfg = tiny_lm({"train": {"num_threads": 2, "batch_size": 5}})
    trainer = Trainer(cfg, fresh=True, progress=False)
    shards = trainer.shards
    assert shards is not None and shards.threads == 2
    x, y = trainer.train_data.batch(trainer.train_data.starts(5, torch.Generator().manual_seed(0)))
    _, loss = trainer.model(x, y)
    expected = torch.autograd.grad(loss, shards.params)

    # Slices of 3 and 2 sequences, weighted 3/5 and 2/5: the batch's mean loss and gradient.
    sharded_loss, grads = shards.loss_and_grads(x, y, 0.5)
    assert sharded_loss.item() == pytest.approx(0.5 * loss.item(), rel=1e-6)
    assert len(grads) == len(expected) == len(list(trainer.model.parameters()))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, 0.5 * want, rtol=1e-5, atol=1e-8)
    with torch.no_grad():
        assert shards.loss(x, y).item() == pytest.approx(loss.item(), rel=1e-6)
    # The same slices in the same order: the same bits, whichever thread ends first.
    again_loss, again = shards.loss_and_grads(x, y, 0.5)
    assert torch.equal(again_loss, sharded_loss)
    assert all(torch.equal(a, b) for a, b in zip(again, grads, strict=True))


def test_thread_shards_with_dropout_draw_the_same_masks_whichever_thread_runs_first(
    tiny_lm: Any,
) -> None:
    cfg = tiny_lm({"model": {"dropout": 0.2}, "train": {"num_threads": 2, "batch_size": 4}})
    trainer = Trainer(cfg, fresh=True, progress=False)
    shards = trainer.shards
    assert shards is not None and shards.dropout  # our GPT's dropout has its own generators
    x, y = trainer.train_data.batch(trainer.train_data.starts(4, torch.Generator().manual_seed(0)))
    torch.manual_seed(5)
    loss, grads = shards.loss_and_grads(x, y, 1.0)
    next_loss, _ = shards.loss_and_grads(x, y, 1.0)  # the next seeds: other masks
    assert not torch.equal(next_loss, loss)
    torch.manual_seed(5)  # the slices' seeds come from the global RNG, in order
    same_loss, same = shards.loss_and_grads(x, y, 1.0)
    assert torch.equal(same_loss, loss)
    assert all(torch.equal(a, b) for a, b in zip(same, grads, strict=True))
    shards.close()


@pytest.mark.parametrize(
    "overrides",
    [
        {"train": {"cpu_batch_split": False}},
        {"train": {"num_threads": 1}},
        {"train": {"batch_size": 1}},
    ],
    ids=["switched-off", "one-thread", "one-sequence"],
)
def test_thread_shards_only_where_they_apply(tiny_lm: Any, overrides: dict[str, Any]) -> None:
    cfg = tiny_lm(deep_merge({"train": {"num_threads": 2}}, overrides))
    assert Trainer(cfg, fresh=True, progress=False).shards is None


def test_no_thread_shards_for_logits_beyond_the_heap(
    tiny_lm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """There torch's threading splits the large ops well, and slices cost memory."""
    cfg = tiny_lm({"train": {"num_threads": 2}})
    vocab = json.loads((cfg.data_dir / "meta.json").read_text())["vocab_size"]
    logits = cfg.train.batch_size * cfg.model.block_size * vocab * 4
    monkeypatch.setattr(lm_config, "HEAP_BLOCK_LIMIT", logits + 1)
    assert Trainer(cfg, fresh=True, progress=False).shards is not None
    monkeypatch.setattr(lm_config, "HEAP_BLOCK_LIMIT", logits)
    assert Trainer(cfg, fresh=True, progress=False).shards is None


def test_training_with_thread_shards_learns_and_restores_the_threads(tiny_lm: Any) -> None:
    cfg = tiny_lm({"train": {"num_threads": 2}})
    result = train(cfg, fresh=True, progress=False)
    assert result.final_metrics["val_loss"] < 3.5  # from ~ln(vocab) = 4.1 at init
    assert torch.get_num_threads() == 2  # one thread only while the loop ran


def test_completed_runs_are_not_resumed_and_fresh_starts_anew(tiny_lm: Any) -> None:
    cfg = tiny_lm({"train": {"max_iters": 5}})
    first = train(cfg, progress=False)
    second = train(cfg, progress=False)
    assert second.run_dir != first.run_dir and second.resumed_from is None


def test_checkpoint_model_args_win_on_resume_with_a_warning(
    tiny_lm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _crash_once(tiny_lm(), monkeypatch)
    wider = tiny_lm({"model": {"n_embd": 64}})
    with pytest.warns(UserWarning, match=r"n_embd: config 64 -> checkpoint 32"):
        result = train(wider, progress=False)
    assert result.resumed_from is not None
    assert _weights(result.run_dir)["wpe.weight"].shape[1] == 32


def test_missing_data_is_an_explicit_error(workspace: Path) -> None:
    from mlharness.lm.config import load_lm_config

    cfg = load_lm_config(None, "nothing_here", overrides={"prepare": {"preparer": "text"}})
    with pytest.raises(DatasetError, match="mlx prepare"):
        train(cfg, progress=False)


def test_checkpoint_schema_is_checked(tiny_lm: Any, tmp_path: Path) -> None:
    run = train(tiny_lm({"train": {"max_iters": 5}}), progress=False).run_dir
    good = run_ckpt.list_checkpoints(run / "checkpoints", "last")[-1].path
    with pytest.raises(CheckpointError, match=r"is not a checkpoint: it has no checkpoint\.json"):
        ckpt.read_meta(tmp_path)
    (good / "trainer.pt").unlink()
    with pytest.raises(CheckpointError, match=r"is incomplete: trainer\.pt is missing"):
        ckpt.read_meta(good)
    meta = json.loads((good / "checkpoint.json").read_text())
    meta["schema"] = 99
    (good / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="has schema 99, this version reads schema 1"):
        ckpt.read_meta(good)


def test_sample_prefers_best_and_is_reproducible(tiny_lm: Any, tmp_path: Path) -> None:
    cfg = tiny_lm()
    run = train(cfg, progress=False).run_dir
    first = sample(cfg)
    second = sample(cfg)
    assert first.checkpoint.name.startswith("ckpt_best_")
    assert first.samples == second.samples and len(first.samples) == 2
    assert first.text_path.is_file() and first.json_path.parent == run / "samples"
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("the ", encoding="utf-8")  # in both corpora (tiny-shakespeare, generated)
    cfg.sample.start = f"FILE:{prompt}"
    assert all(s.startswith("the ") for s in sample(cfg).samples)
    cfg.sample.start = "€"
    with pytest.raises(ConfigError, match="cannot be encoded by this run's tokenizer"):
        sample(cfg)


def test_sample_without_a_run_is_an_explicit_error(tiny_lm: Any) -> None:
    with pytest.raises(CheckpointError, match="No trained run of experiment 'tiny'"):
        sample(tiny_lm())


def test_ema_weights_are_kept_and_sampled(tiny_lm: Any) -> None:
    cfg = tiny_lm({"train": {"ema_decay": 0.9}})
    result = train(cfg, progress=False)
    last = run_ckpt.list_checkpoints(result.run_dir / "checkpoints", "last")[-1].path
    assert (last / "ema.safetensors").is_file()
    evals = [r for r in iter_records(result.run_dir) if "val_loss" in r]
    assert "val_ema_loss" in evals[-1]
    assert sample(cfg).samples


def test_resume_refuses_data_prepared_anew(
    tiny_lm: Any, lm_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlharness.lm.prepare import prepare_data

    cfg = tiny_lm()
    crashed = _crash_once(cfg, monkeypatch)
    prepare_data(cfg, None, force=True, progress=False)  # the same text again: fine
    assert train(cfg, progress=False).run_dir == crashed

    crashed = _crash_once(cfg, monkeypatch)
    lm_corpus.write_text(lm_corpus.read_text(encoding="utf-8") + "Zebra ~ 42\n", encoding="utf-8")
    prepare_data(cfg, None, force=True, progress=False)
    with pytest.raises(DatasetError, match=r"prepared anew since the run .* started") as err:
        train(cfg, progress=False)
    assert "vocab_size" in str(err.value) and "source text" in str(err.value)
    assert str(crashed) in str(err.value) and "--fresh" in str(err.value)
    (crashed / "meta.json").write_text("{", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"meta\.json cannot be read .* start a new run"):
        train(cfg, progress=False)
    assert train(cfg, fresh=True, progress=False).run_dir != crashed


def test_ema_switched_on_at_resume_averages_from_the_trained_weights(
    tiny_lm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _crash_once(tiny_lm(), monkeypatch)  # no EMA in its checkpoints
    trainer = Trainer(tiny_lm({"train": {"ema_decay": 0.9}}))
    assert trainer.resumed_from is not None and trainer.ema is not None
    trained = trainer.model.state_dict()
    assert all(torch.equal(trainer.ema[k], trained[k]) for k in trained)


def test_compiled_training_matches_eager_and_resumes(
    tiny_lm: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """train.compile runs the step through torch.compile (inductor's C++ kernels on the CPU).

    Its checkpoints hold the plain model's parameter names (no ``_orig_mod.`` prefix), so
    they load into an eager model, resume, and sample like any other.
    """
    cfg = tiny_lm({"train": {"compile": True, "max_iters": 10, "eval_interval": 5}})
    eager = train(tiny_lm({"train": {"max_iters": 10, "eval_interval": 5}}), progress=False)
    with caplog.at_level(logging.INFO, logger="mlharness"):
        compiled = train(cfg, fresh=True, progress=False)
    assert compiled.status == "completed"
    assert "the first step compiles the model" in caplog.text  # a long silent first step
    a, b = _weights(eager.run_dir), _weights(compiled.run_dir)
    assert a.keys() == b.keys()
    for key in a:  # the same step, fused into other kernels: equal up to float rounding
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4)

    crashed = _crash_once(cfg, monkeypatch, at_step=8)
    resumed = train(cfg, progress=False)  # from ckpt_last_00000005, compiled anew
    assert resumed.run_dir == crashed and resumed.iterations == 10
    c = _weights(resumed.run_dir)
    for key in b:
        assert torch.equal(b[key], c[key]), key


@pytest.mark.parametrize(
    ("device", "dtype", "expected"),
    [
        ("cpu", "auto", None),
        ("cpu", "float32", None),
        ("cpu", "bfloat16", torch.bfloat16),
        ("cuda", "auto", torch.bfloat16),  # seed 001: bf16 on CUDA by default
        ("cuda", "float32", None),
        ("mps", "auto", None),
        ("mps", "bfloat16", torch.bfloat16),  # asked for: not silently dropped
    ],
)
def test_autocast_dtype_by_device(device: str, dtype: str, expected: Any) -> None:
    from mlharness.lm.trainer import autocast_context

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available ... Disabling autocast"
        context = autocast_context(torch.device(device), dtype)
    if expected is None:
        assert not isinstance(context, torch.autocast)
    else:
        assert isinstance(context, torch.autocast)
        assert context.fast_dtype == expected and context.device == device


def test_bfloat16_autocast_trains_on_the_cpu_with_float32_weights(tiny_lm: Any) -> None:
    cfg = tiny_lm({"train": {"dtype": "bfloat16", "num_threads": 2}})
    trainer = Trainer(cfg, fresh=True, progress=False)
    assert trainer.shards is not None  # each slice enters its own autocast context
    x, y = trainer.train_data.batch(trainer.train_data.starts(4, torch.Generator()))
    with trainer.autocast():
        logits, _ = trainer.model(x, y)
    assert logits.dtype == torch.bfloat16  # the matmuls ran in bf16
    trainer.shards.close()

    result = train(cfg, fresh=True, progress=False)
    assert result.status == "completed"
    assert result.final_metrics["val_loss"] < 3.6  # from ~ln(vocab) = 4.1 at init
    weights = _weights(result.run_dir)
    assert all(w.dtype == torch.float32 for w in weights.values())
