"""`mlx sample` with no --run-dir takes the newest run that has trained and says what it skipped."""

from __future__ import annotations

import shutil
import sys
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from mlharness.errors import CheckpointError  # noqa: E402
from mlharness.lm import runner  # noqa: E402
from mlharness.lm.trainer import train  # noqa: E402


def test_untrained_newer_runs_are_skipped_and_said(tiny_lm: Any) -> None:
    cfg = tiny_lm()
    trained = train(cfg, progress=False).run_dir
    parent = trained.parent
    initial_only = parent / "29991231_235959"
    some = next((trained / "checkpoints").iterdir())
    shutil.copytree(some, initial_only / "checkpoints" / "ckpt_last_00000000")
    (parent / "29991231_235958").mkdir()  # started, killed before its first checkpoint
    with pytest.warns(UserWarning) as said:
        result = runner.sample(cfg, out=sys.stdout)
    assert result.checkpoint.parent.parent == trained
    messages = [str(w.message) for w in said]
    assert messages == [
        f"Skipped run 29991231_235959: it holds only its initial checkpoint (step 0); "
        f"taking {trained.name}.",
        f"Skipped run 29991231_235958: it has no checkpoint; taking {trained.name}.",
    ]


def test_nothing_trained_fails_before_the_model_code_loads(
    tiny_lm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_lm()
    monkeypatch.delitem(sys.modules, "mlharness.lm.sampler", raising=False)
    with pytest.raises(CheckpointError, match="No trained run of experiment 'tiny'"):
        runner.sample(cfg)
    assert "mlharness.lm.sampler" not in sys.modules
    (cfg.output_dir / "tiny" / "20260101_000000").mkdir(parents=True)
    with pytest.warns(UserWarning, match="no other run trained"), pytest.raises(CheckpointError):
        runner.sample(cfg)
