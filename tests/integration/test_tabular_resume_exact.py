"""A tabular run stopped by Ctrl+C and run again resumes in its own directory and ends
exactly as one that never stopped: every model and optimizer kind, shuffled or not,
standardised or not, closed form too (``mlharness.tabular.runner.run_experiment``).

The Ctrl+C is a real SIGINT raised in this process at a chosen training step; the state is
written after every epoch here (``RESUME_INTERVAL_S = 0``). The subprocess versions, SIGKILL
included, are in tests/e2e/test_tabular_resume.py.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlharness.config import deep_merge, validate
from mlharness.tabular import loop as loop_module
from mlharness.tabular import runner
from mlharness.tabular.config import ExperimentConfig
from mlharness.tabular.runner import RunResult, run_experiment

REGRESSION = {"name": "synthetic_regression", "params": {"n_samples": 200, "n_features": 5}}
THREE_CLASSES = {
    "name": "synthetic_classification",
    "params": {"n_samples": 200, "n_features": 4, "n_classes": 3, "class_sep": 1.5},
}
TWO_CLASSES = deep_merge(THREE_CLASSES, {"params": {"n_classes": 2}})

# 160 training rows in batches of 32: 5 steps an epoch.
CASES: dict[str, tuple[dict[str, Any], int]] = {
    "mlp-adam-standardized": (
        {
            "dataset": deep_merge(REGRESSION, {"params": {"standardize": True}}),
            "model": {"name": "mlp", "params": {"layer_sizes": [5, 16, 1], "activation": "tanh"}},
        },
        13,
    ),
    "mlp-softmax-rmsprop-momentum": (
        {
            "dataset": THREE_CLASSES,
            "model": {
                "name": "mlp",
                "params": {"layer_sizes": [4, 8, 3], "output_activation": "softmax"},
            },
            "training": {"optimizer": "rmsprop", "params": {"momentum": 0.9}},
        },
        22,
    ),
    "mlp-sigmoid-sgd-nesterov": (
        {
            "dataset": TWO_CLASSES,
            "model": {
                "name": "mlp",
                "params": {"layer_sizes": [4, 8, 1], "output_activation": "sigmoid"},
            },
            "training": {"optimizer": "sgd", "params": {"momentum": 0.9, "nesterov": True}},
        },
        6,
    ),
    "linear-adamw-unshuffled": (
        {
            "dataset": REGRESSION,
            "model": {"name": "linear_regression", "params": {"use_gradient_descent": True}},
            "training": {"optimizer": "adamw", "shuffle": False},
        },
        30,
    ),
    "linear-closed-form": ({"dataset": REGRESSION, "model": {"name": "linear_regression"}}, 1),
}


def _config(case: str) -> ExperimentConfig:
    body, _ = CASES[case]
    common = {
        "name": case,
        "training": {"epochs": 8, "batch_size": 32, "learning_rate": 0.01, "seed": 4},
        "output": {"directory": "runs", "checkpoint_frequency": 3, "tensorboard": False},
    }
    return validate(ExperimentConfig, deep_merge(common, body))


def _stop_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Ctrl+C (a real SIGINT) right before the model's ``step``-th training step."""
    build_model = runner.build_model

    def build_and_stop(cfg: ExperimentConfig, dataset: Any) -> Any:
        model = build_model(cfg, dataset)
        train_step, calls = model.train_step, [0]

        def step_or_stop(X: np.ndarray, y: np.ndarray) -> dict[str, float]:
            calls[0] += 1
            if calls[0] == step:
                signal.raise_signal(signal.SIGINT)
            return train_step(X, y)

        model.train_step = step_or_stop  # type: ignore[method-assign]
        return model

    monkeypatch.setattr(runner, "build_model", build_and_stop)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _assert_same_run(reference: RunResult, resumed: RunResult) -> None:
    ref, run = reference.run_dir, resumed.run_dir
    checkpoints = sorted(p.name for p in (ref / "checkpoints").iterdir())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == checkpoints
    for name in checkpoints:
        for file in ("weights.npz", "optimizer.npz"):
            if (ref / "checkpoints" / name / file).is_file():
                expected = _arrays(ref / "checkpoints" / name / file)
                got = _arrays(run / "checkpoints" / name / file)
                assert expected.keys() == got.keys()
                assert all(np.array_equal(expected[k], got[k]) for k in expected), (name, file)
    for file in ("metrics.json", "metrics.ndjson", "metrics.md"):
        assert (run / "metrics" / file).read_bytes() == (ref / "metrics" / file).read_bytes()
    for key in ("status", "final_metrics", "epochs_completed", "epochs_planned", "checkpoints"):
        assert resumed.summary[key] == reference.summary[key], key


@pytest.mark.parametrize("case", list(CASES))
def test_a_run_stopped_mid_epoch_resumes_exactly(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    monkeypatch.setattr(loop_module, "RESUME_INTERVAL_S", 0.0)
    cfg = _config(case)
    reference = run_experiment(cfg, progress=False)
    assert not (reference.run_dir / "checkpoints" / "resume").exists()  # gone on completion

    with monkeypatch.context() as patch:
        _stop_at_step(patch, CASES[case][1])
        stopped = run_experiment(cfg, progress=False)
    assert stopped.status == "interrupted" and stopped.run_dir != reference.run_dir
    state = json.loads((stopped.run_dir / "checkpoints/resume/trainer.json").read_text())
    completed = stopped.summary["epochs_completed"]
    assert state["epoch"] == completed  # the epoch before the one the stop cut short
    assert (stopped.run_dir / "checkpoints" / "checkpoint_interrupted").is_dir()

    resumed = run_experiment(cfg, progress=False)
    assert resumed.run_dir == stopped.run_dir
    assert resumed.summary["resumed_at_epoch"] == completed
    _assert_same_run(reference, resumed)
    assert sorted(p.name for p in (workspace / "runs" / case).iterdir()) == sorted(
        [reference.run_dir.name, stopped.run_dir.name]
    )
    entries = json.loads((workspace / "runs" / "index.json").read_text())["runs"]
    assert [e["status"] for e in entries] == ["completed", "completed"]


def test_a_stop_at_an_epoch_end_resumes_from_that_epoch(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default interval no state is due yet; the stop writes it there and then."""
    cfg = _config("mlp-adam-standardized")
    reference = run_experiment(cfg, progress=False)
    epoch_metrics = loop_module.TrainingLoop.epoch_metrics

    def metrics_then_stop(self: Any, epoch: int, *args: Any) -> dict[str, Any]:
        if epoch == 3:
            signal.raise_signal(signal.SIGINT)  # Ctrl+C once epoch 3 has trained
        return epoch_metrics(self, epoch, *args)

    with monkeypatch.context() as patch:
        patch.setattr(loop_module.TrainingLoop, "epoch_metrics", metrics_then_stop)
        stopped = run_experiment(cfg, progress=False)
    assert stopped.summary["epochs_completed"] == 3
    state = json.loads((stopped.run_dir / "checkpoints/resume/trainer.json").read_text())
    assert state["epoch"] == 3
    resumed = run_experiment(cfg, progress=False)
    assert resumed.summary["resumed_at_epoch"] == 3
    _assert_same_run(reference, resumed)


def test_without_checkpoints_nothing_resumes(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``output.save_checkpoints: false`` writes no resume state either: the next run is new."""
    cfg = _config("mlp-adam-standardized")
    cfg = validate(
        ExperimentConfig,
        deep_merge(cfg.model_dump(mode="json"), {"output": {"save_checkpoints": False}}),
    )
    monkeypatch.setattr(loop_module, "RESUME_INTERVAL_S", 0.0)
    with monkeypatch.context() as patch:
        _stop_at_step(patch, 13)
        stopped = run_experiment(cfg, progress=False)
    assert list((stopped.run_dir / "checkpoints").iterdir()) == []
    again = run_experiment(cfg, progress=False)
    assert again.run_dir != stopped.run_dir and again.status == "completed"
    assert "resumed_at_epoch" not in again.summary
