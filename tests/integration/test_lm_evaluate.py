"""`mlx eval` on an lm run: a checkpoint's loss and perplexity on the run's own data."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from mlharness.errors import CheckpointError, EvaluationError  # noqa: E402
from mlharness.lm.evaluate import evaluate, window_starts  # noqa: E402
from mlharness.lm.prepare import prepare_data  # noqa: E402
from mlharness.lm.trainer import train  # noqa: E402
from mlharness.runs import checkpoints as run_ckpt  # noqa: E402


@pytest.fixture
def trained(tiny_lm: Any) -> Path:
    return train(tiny_lm(), progress=False).run_dir


def test_scores_both_splits_and_writes_the_report(trained: Path) -> None:
    report = evaluate(trained)
    best = run_ckpt.pick_for_sampling(trained / "checkpoints").path
    assert report["checkpoint"] == str(best)
    for split in ("train", "val"):
        r = report["results"][split]
        assert 0 < r["loss"] < 10 and r["perplexity"] == pytest.approx(math.exp(r["loss"]))
        assert 0 < r["tokens_scored"] <= r["tokens_in_split"]
    written = json.loads((trained / "eval" / f"{best.name}.json").read_text(encoding="utf-8"))
    assert written["results"] == report["results"]
    assert "| val |" in (trained / "eval" / f"{best.name}.md").read_text(encoding="utf-8")
    assert evaluate(trained)["results"] == report["results"]  # the same windows every time


def test_the_initial_checkpoint_scores_worse_than_the_trained_one(tiny_lm: Any) -> None:
    keep_all = {"train": {"checkpointing": {"keep": {"last": 100}}}}
    trained = train(tiny_lm(keep_all), progress=False).run_dir
    first = "ckpt_last_00000000"
    assert (trained / "checkpoints" / first).is_dir()
    initial = evaluate(trained, first)["results"]["val"]["loss"]
    assert evaluate(trained)["results"]["val"]["loss"] < initial


def test_max_tokens_spreads_fewer_windows_over_the_split(trained: Path) -> None:
    report = evaluate(trained, max_tokens=64)
    assert report["results"]["val"]["tokens_scored"] <= 64
    assert window_starts(1000, 10, 10**6).tolist() == list(range(0, 990, 10))


def test_errors_say_what_to_do(trained: Path, tiny_lm: Any, lm_corpus: Path) -> None:
    with pytest.raises(CheckpointError, match=r"No checkpoint 'nope' .* \(it has: ckpt_"):
        evaluate(trained, "nope")
    with pytest.raises(EvaluationError, match="has no checkpoints/"):
        evaluate(trained / "eval")
    lm_corpus.write_text(lm_corpus.read_text(encoding="utf-8") + "Zebra ~ 42\n", encoding="utf-8")
    prepare_data(tiny_lm(), None, force=True, progress=False)
    with pytest.raises(EvaluationError, match=r"prepared anew .* source text"):
        evaluate(trained)
