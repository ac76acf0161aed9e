"""lm runs that start from a nanoGPT checkpoint or from one of our runs (init_from)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from lm_support import TINY_LM, corpus_text, write_nanogpt_checkpoint  # noqa: E402
from mlharness.config import deep_merge  # noqa: E402
from mlharness.lm import checkpoints as ckpt  # noqa: E402
from mlharness.lm import evaluate as lm_eval  # noqa: E402
from mlharness.lm.config import load_lm_config  # noqa: E402
from mlharness.lm.meta import load_meta  # noqa: E402
from mlharness.lm.model import GPT, GPTConfig  # noqa: E402
from mlharness.lm.prepare import prepare_data  # noqa: E402
from mlharness.lm.tokenizers import CharTokenizer  # noqa: E402
from mlharness.lm.trainer import iter_records, train  # noqa: E402
from mlharness.runs import checkpoints as run_ckpt  # noqa: E402

CHARS = CharTokenizer.from_text(corpus_text()).chars  # the tiny_lm data's vocabulary
KEEP_ALL = {"train": {"checkpointing": {"keep": {"last": 10}}}}  # step 0's too
SOURCE_ARGS = {
    "n_layer": 2,
    "n_head": 2,
    "n_embd": 32,
    "block_size": 32,
    "bias": True,
    "vocab_size": len(CHARS),
    "dropout": 0.0,
}


def _step0(run_dir: Path) -> dict[str, Any]:
    return ckpt.load_weights(run_dir / "checkpoints" / "ckpt_last_00000000")


def _val_loss(report: dict[str, Any]) -> float:
    loss: float = report["results"]["val"]["loss"]
    return loss


def test_training_from_a_nanogpt_checkpoint(tiny_lm: Any, workspace: Path) -> None:
    file = write_nanogpt_checkpoint(workspace / "out-nano", SOURCE_ARGS, CHARS)
    # TINY_LM's [model] agrees with the source (bias and dropout come from the source).
    cfg = tiny_lm({"init_from": "nanogpt:out-nano", **KEEP_ALL})
    result = train(cfg, progress=False)

    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["init_from"] == f"nanogpt:{workspace / 'out-nano'}"
    assert config["started_from"] == {"kind": "nanogpt", "path": str(file), "iter": 250}
    assert config["model_args"] == SOURCE_ARGS and config["model"]["n_layer"] == 2
    # The first checkpoint holds the source's weights, so it scores what the source scores.
    source = torch.load(file, weights_only=True)["model"]
    step0 = _step0(result.run_dir)
    for key, tensor in source.items():
        name = key.removeprefix("_orig_mod.").removeprefix("transformer.")
        if name in step0:
            assert step0[name].equal(tensor), name
    model = GPT(GPTConfig(**SOURCE_ARGS))
    run_ckpt.load_into(model, step0)
    initial = _val_loss(lm_eval.evaluate(result.run_dir, "ckpt_last_00000000"))
    tokens = lm_eval.split_tokens(cfg, result.run_dir)["val"]
    starts = lm_eval.window_starts(len(tokens), 32, lm_eval.MAX_TOKENS)
    assert initial == lm_eval.split_loss(model.eval(), tokens, starts, torch.device("cpu"))
    final = _val_loss(lm_eval.evaluate(result.run_dir, "ckpt_last_00000020"))
    assert final < initial - 0.5, (initial, final)


def test_dropout_and_a_shorter_context_may_differ_from_the_source(
    tiny_lm: Any, workspace: Path
) -> None:
    write_nanogpt_checkpoint(workspace / "out-nano", SOURCE_ARGS, CHARS)
    cfg = tiny_lm(
        {"init_from": "nanogpt:out-nano", "model": {"dropout": 0.1, "block_size": 8}, **KEEP_ALL},
    )
    run = train(cfg, progress=False).run_dir
    meta = ckpt.read_meta(run / "checkpoints" / "ckpt_last_00000020")
    assert meta["model_args"] == {**SOURCE_ARGS, "dropout": 0.1, "block_size": 8}
    assert _step0(run)["wpe.weight"].shape == (8, 32)


def test_continuing_one_of_our_runs_on_new_data(tiny_lm: Any, lm_corpus: Path) -> None:
    first = train(tiny_lm(), progress=False)
    best = run_ckpt.pick_for_sampling(first.run_dir / "checkpoints").path
    # Another experiment, its own data (same characters): a new run from the best weights.
    more = {"prepare": {"preparer": "text", "input": str(lm_corpus)}, **KEEP_ALL}
    more["init_from"] = f"run:{first.run_dir}"  # type: ignore[assignment]
    cfg = load_lm_config(None, "tiny_more", overrides=deep_merge(TINY_LM, more))
    prepare_data(cfg, None, force=True, progress=False)
    second = train(cfg, progress=False)
    assert second.run_dir.parent.name == "tiny_more" and second.resumed_from is None
    started = json.loads((second.run_dir / "config.json").read_text())["started_from"]
    assert started == {"kind": "run", "path": str(best), "iter": int(best.name[10:18])}
    source, step0 = ckpt.load_weights(best), _step0(second.run_dir)
    assert source.keys() == step0.keys()
    assert all(step0[k].equal(source[k]) for k in source)
    # Weights only: a fresh optimizer and schedule, counted from iteration 0.
    assert [r["iter"] for r in iter_records(second.run_dir) if "loss" in r] == [5, 10, 15, 20]
    state = run_ckpt.load_trainer_state(second.run_dir / "checkpoints" / "ckpt_last_00000000")
    assert state["optimizer"]["state"] == {}
    assert load_meta(cfg.data_dir)["tokenizer"] == load_meta(first.run_dir)["tokenizer"]
