"""End to end through the Python API: config -> run directory -> evaluation."""

from __future__ import annotations

import copy
import json
import math
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm

from mlharness.config import validate
from mlharness.errors import EvaluationError
from mlharness.runs import metrics as runs_metrics
from mlharness.runs.interrupt import GracefulInterrupt
from mlharness.runs.metrics import MetricsWriter
from mlharness.runs.plots import plot_curves
from mlharness.tabular import runner
from mlharness.tabular.config import ExperimentConfig
from mlharness.tabular.evaluation import (
    Evaluator,
    classification_metrics,
    predict_labels,
    regression_metrics,
)
from mlharness.tabular.loop import TrainingLoop, split_data
from mlharness.tabular.preprocessing import Standardizer
from mlharness.tabular.runner import RunResult, evaluate_run, load_run_config, run_experiment

EPOCHS = 6
FREQUENCY = 2
REGRESSION_KEYS = ["epoch", "loss", "val_loss", "mse", "r2", "val_mse", "val_r2"]
CLASSIFICATION_KEYS = ["epoch", "loss", "val_loss", "accuracy", "val_accuracy"]

REGRESSION_DATA = {
    "name": "synthetic_regression",
    "params": {"n_samples": 200, "n_features": 5, "noise_std": 0.1, "seed": 1},
}

EXPERIMENTS: dict[str, dict[str, Any]] = {
    "linear-closed": {
        "dataset": REGRESSION_DATA,
        "model": {"name": "linear_regression"},
    },
    "linear-gd": {
        "dataset": REGRESSION_DATA,
        "model": {"name": "linear_regression", "params": {"use_gradient_descent": True}},
        "training": {"learning_rate": 0.1},
    },
    "mlp-softmax": {
        "dataset": {
            "name": "synthetic_classification",
            "params": {"n_samples": 240, "n_features": 4, "n_classes": 3, "class_sep": 2.0},
        },
        "model": {
            "name": "mlp",
            "params": {"layer_sizes": [4, 16, 3], "output_activation": "softmax"},
        },
        "training": {"learning_rate": 0.02},
    },
    "mlp-sigmoid": {
        "dataset": {
            "name": "synthetic_classification",
            "params": {"n_samples": 200, "n_features": 4, "class_sep": 2.0},
        },
        "model": {
            "name": "mlp",
            "params": {"layer_sizes": [4, 8, 1], "output_activation": "sigmoid"},
        },
        "training": {"learning_rate": 0.02},
    },
    "iris": {
        "dataset": {"name": "iris"},
        "model": {
            "name": "mlp",
            "params": {"layer_sizes": [4, 16, 3], "output_activation": "softmax"},
        },
        "training": {"learning_rate": 0.05, "batch_size": 16},
    },
    "diabetes": {
        "dataset": {"name": "diabetes"},
        "model": {"name": "linear_regression"},
    },
    "csv": {
        "dataset": {"name": "csv", "path": "data/animals.csv", "params": {"target": "animal"}},
        "model": {
            "name": "mlp",
            "params": {"layer_sizes": [3, 8, 2], "output_activation": "softmax"},
        },
        "training": {"learning_rate": 0.05, "batch_size": 16},
    },
}
TASKS = {
    "linear-closed": "regression",
    "linear-gd": "regression",
    "mlp-softmax": "classification",
    "mlp-sigmoid": "classification",
    "iris": "classification",
    "diabetes": "regression",
    "csv": "classification",
}
ITERATIVE = {"linear-gd", "mlp-softmax", "mlp-sigmoid", "iris", "csv"}


def _config(experiment: str, **changes: Any) -> ExperimentConfig:
    """The config of ``EXPERIMENTS[experiment]``; ``changes`` update sections or set fields."""
    spec = copy.deepcopy(EXPERIMENTS[experiment])
    data: dict[str, Any] = {
        "name": experiment,
        "dataset": spec["dataset"],
        "model": spec["model"],
        "training": {"epochs": EPOCHS, "batch_size": 32, "seed": 3, **spec.get("training", {})},
        "output": {"directory": "runs", "checkpoint_frequency": FREQUENCY},
    }
    for section, values in changes.items():
        if isinstance(values, dict):
            data[section] = {**data.get(section, {}), **values}
        else:
            data[section] = values
    return validate(ExperimentConfig, data)


def _write_csv(root: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    labels = np.where(X @ np.array([1.5, -1.0, 0.5]) > 0, "cat", "dog")
    lines = ["x1,x2,x3,animal"] + [
        f"{a:.6f},{b:.6f},{c:.6f},{label}" for (a, b, c), label in zip(X, labels, strict=True)
    ]
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "animals.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# Drawing curves.png costs ~0.3 s per run, most of this module's time. Experiments named
# here draw it for real; the others only record that it was asked for (the plot itself is
# covered by tests/unit/test_metrics_writer.py).
REAL_PLOTS = {"linear-gd"}
PLOT_REQUESTS: list[str] = []


def _plot_some(history: Any, path: Any, step_key: str = "epoch", title: Any = None) -> Any:
    if title in REAL_PLOTS:
        return plot_curves(history, path, step_key, title)
    PLOT_REQUESTS.append(str(title))
    return None


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One workspace for the module, so each experiment trains once and many tests read it."""
    root = tmp_path_factory.mktemp("workspace")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLX_WORKSPACE", str(root))
        mp.delenv("MLX_OVERRIDES", raising=False)
        mp.setattr(runs_metrics, "plot_curves", _plot_some)
        _write_csv(root)
        yield root


@pytest.fixture(scope="module")
def runs(ws: Path) -> dict[str, RunResult]:
    return {name: run_experiment(_config(name), progress=False) for name in EXPERIMENTS}


# --------------------------------------------------------------------------- every experiment


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_run_completes_and_is_recorded(ws: Path, runs: dict[str, RunResult], name: str) -> None:
    result = runs[name]
    assert result.status == "completed"
    run_dir = result.run_dir
    assert run_dir.parent == ws / "runs" / name
    summary = _json(run_dir / "summary.json")
    assert summary["status"] == "completed"
    assert summary["final_metrics"] == result.summary["final_metrics"]
    assert summary["epochs_completed"] == (EPOCHS if name in ITERATIVE else 1)

    metrics = _json(run_dir / "metrics" / "metrics.json")
    assert metrics["experiment"] == name
    assert metrics["final_metrics"] == summary["final_metrics"]
    assert metrics["metrics"][-1] == summary["final_metrics"]
    ndjson = (run_dir / "metrics" / "metrics.ndjson").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in ndjson] == metrics["metrics"]
    assert (
        (run_dir / "metrics" / "metrics.md")
        .read_text(encoding="utf-8")
        .startswith(f"# Metrics: {name}\n")
    )
    if name in REAL_PLOTS:
        assert (run_dir / "metrics" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    else:
        assert name in PLOT_REQUESTS
    assert list((run_dir / "logs" / "tb").glob("events.out.tfevents.*"))
    assert "Final metrics:" in (run_dir / "logs" / "console.log").read_text(encoding="utf-8")

    config = _json(run_dir / "config.json")
    assert config["name"] == name
    assert config["_run"]["kind"] == "tabular"
    assert set(config["_run"]["seeds"]) == {"dataset", "model", "training"}
    assert load_run_config(run_dir) == _config(name)

    entries = [r for r in _json(ws / "runs" / "index.json")["runs"] if r["experiment"] == name]
    assert [e["run_dir"] for e in entries] == [f"{name}/{run_dir.name}"]
    assert entries[0]["status"] == "completed"
    assert entries[0]["final_metrics"] == summary["final_metrics"]


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_metric_keys_per_task(runs: dict[str, RunResult], name: str) -> None:
    history = _json(runs[name].run_dir / "metrics" / "metrics.json")["metrics"]
    expected = REGRESSION_KEYS if TASKS[name] == "regression" else CLASSIFICATION_KEYS
    assert [list(record) for record in history] == [expected] * len(history)
    assert [r["epoch"] for r in history] == list(range(1, len(history) + 1))
    for record in history:
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in record.values())


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_checkpoints_every_frequency_plus_final(runs: dict[str, RunResult], name: str) -> None:
    checkpoints = runs[name].run_dir / "checkpoints"
    if name in ITERATIVE:
        expected = [f"checkpoint_epoch_{e}" for e in range(FREQUENCY, EPOCHS + 1, FREQUENCY)]
        expected.append("checkpoint_final")
    else:
        expected = ["checkpoint_final"]  # one closed-form "epoch"; 1 % 2 != 0
    assert runs[name].summary["checkpoints"] == expected
    assert sorted(p.name for p in checkpoints.iterdir() if p.is_dir()) == sorted(expected)
    for ckpt in expected:
        assert (checkpoints / ckpt / "model.json").is_file()
        assert (checkpoints / ckpt / "weights.npz").is_file()
    assert not [p for p in checkpoints.rglob("*") if p.name.endswith((".tmp", ".old"))]


def test_models_learn(runs: dict[str, RunResult]) -> None:
    final = {name: r.summary["final_metrics"] for name, r in runs.items()}
    assert final["linear-closed"]["val_r2"] > 0.99
    assert final["linear-gd"]["val_r2"] > 0.9
    assert final["diabetes"]["val_r2"] > 0.3
    for name in ("mlp-softmax", "mlp-sigmoid", "iris", "csv"):
        assert final[name]["val_accuracy"] > 0.75, (name, final[name])
    history = _json(runs["linear-gd"].run_dir / "metrics" / "metrics.json")["metrics"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]


def test_closed_form_loss_is_the_training_mse(runs: dict[str, RunResult]) -> None:
    final = runs["linear-closed"].summary["final_metrics"]
    assert final["epoch"] == 1
    assert final["loss"] == pytest.approx(final["mse"], rel=1e-12)
    assert final["val_loss"] == pytest.approx(final["val_mse"], rel=1e-12)


# --------------------------------------------------------------------------- determinism


def test_same_config_gives_byte_identical_metrics(ws: Path) -> None:
    first = run_experiment(_config("mlp-softmax", name="determinism"), progress=False)
    second = run_experiment(_config("mlp-softmax", name="determinism"), progress=False)
    assert first.run_dir != second.run_dir
    for name in ("metrics.json", "metrics.ndjson", "metrics.md"):
        a = (first.run_dir / "metrics" / name).read_bytes()
        b = (second.run_dir / "metrics" / name).read_bytes()
        assert a == b, name
    w1 = np.load(first.run_dir / "checkpoints" / "checkpoint_final" / "weights.npz")
    w2 = np.load(second.run_dir / "checkpoints" / "checkpoint_final" / "weights.npz")
    assert sorted(w1.files) == sorted(w2.files)
    for key in w1.files:
        np.testing.assert_array_equal(w1[key], w2[key])

    other = run_experiment(
        _config("mlp-softmax", name="determinism", training={"seed": 4}), progress=False
    )
    assert (other.run_dir / "metrics" / "metrics.json").read_bytes() != (
        first.run_dir / "metrics" / "metrics.json"
    ).read_bytes()


# --------------------------------------------------------------------------- standardization


def test_standardization_writes_preprocessing_and_evaluation_uses_it(
    runs: dict[str, RunResult],
) -> None:
    cfg = _config("iris")
    assert cfg.dataset.params.standardize is True
    stats = _json(runs["iris"].run_dir / "checkpoints" / "preprocessing.json")
    X_train, X_val, _, _ = split_data(runner.build_dataset(cfg), 3, 0.2)
    np.testing.assert_allclose(stats["mean"], X_train.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["std"], X_train.std(axis=0), rtol=1e-12)

    evaluator = Evaluator(runs["iris"].run_dir)
    np.testing.assert_allclose(
        evaluator.transform(X_val), Standardizer().fit(X_train).transform(X_val), rtol=1e-12
    )
    report = evaluate_run(runs["iris"].run_dir, cfg)
    final = runs["iris"].summary["final_metrics"]
    assert report["splits"]["validation"]["accuracy"] == final["val_accuracy"]
    assert report["splits"]["validation"]["log_loss"] == pytest.approx(final["val_loss"])
    # Without the scaler the same model scores differently: evaluation really applied it.
    model = evaluator.load_model()
    raw_labels, _ = predict_labels(model, X_val)
    scaled_labels, _ = predict_labels(model, evaluator.transform(X_val))
    assert not np.array_equal(raw_labels, scaled_labels)


def test_diabetes_is_standardized_and_synthetic_data_is_not(runs: dict[str, RunResult]) -> None:
    assert (runs["diabetes"].run_dir / "checkpoints" / "preprocessing.json").is_file()
    assert (runs["csv"].run_dir / "checkpoints" / "preprocessing.json").is_file()
    for name in ("linear-closed", "linear-gd", "mlp-softmax", "mlp-sigmoid"):
        assert not (runs[name].run_dir / "checkpoints" / "preprocessing.json").exists()
        assert Evaluator(runs[name].run_dir).preprocessing() is None


def test_standardize_can_be_turned_on_for_synthetic_data(ws: Path) -> None:
    cfg = _config(
        "linear-closed",
        name="scaled",
        dataset={**REGRESSION_DATA, "params": {**REGRESSION_DATA["params"], "standardize": True}},
    )
    result = run_experiment(cfg, progress=False)
    assert (result.run_dir / "checkpoints" / "preprocessing.json").is_file()
    report = evaluate_run(result.run_dir, cfg)
    assert report["splits"]["validation"]["mse"] == pytest.approx(
        result.summary["final_metrics"]["val_mse"], rel=1e-12
    )


# --------------------------------------------------------------------------- evaluate_run


def test_evaluate_run_classification_report(runs: dict[str, RunResult]) -> None:
    run_dir = runs["mlp-softmax"].run_dir
    cfg = load_run_config(run_dir)
    report = evaluate_run(run_dir, cfg)
    assert report["files"] == [
        str(run_dir / "eval" / "checkpoint_final.json"),
        str(run_dir / "eval" / "checkpoint_final.md"),
    ]
    saved = _json(run_dir / "eval" / "checkpoint_final.json")
    assert saved == {k: v for k, v in report.items() if k != "files"}
    assert saved["task"] == "classification"
    assert saved["checkpoint"] == "checkpoint_final"
    assert list(saved["splits"]) == ["validation", "train"]

    X_train, X_val, y_train, y_val = split_data(runner.build_dataset(cfg), 3, 0.2)
    model = Evaluator(run_dir).load_model()
    for split, X, y in (("validation", X_val, y_val), ("train", X_train, y_train)):
        scores = saved["splits"][split]
        labels, proba = predict_labels(model, X)
        assert scores["n_samples"] == len(y)
        assert scores["accuracy"] == pytest.approx(skm.accuracy_score(y, labels))
        assert scores["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=[0, 1, 2]))
        precision, recall, f1, support = skm.precision_recall_fscore_support(
            y, labels, labels=[0, 1, 2], zero_division=0
        )
        assert list(scores["per_class"]) == ["0", "1", "2"]
        for c in range(3):
            got = scores["per_class"][str(c)]
            assert got["precision"] == pytest.approx(precision[c])
            assert got["recall"] == pytest.approx(recall[c])
            assert got["f1"] == pytest.approx(f1[c])
            assert got["support"] == support[c]
        assert scores["macro_f1"] == pytest.approx(skm.f1_score(y, labels, average="macro"))
        assert scores["confusion_matrix"] == skm.confusion_matrix(y, labels).tolist()
    final = runs["mlp-softmax"].summary["final_metrics"]
    assert saved["splits"]["validation"]["accuracy"] == final["val_accuracy"]

    md = (run_dir / "eval" / "checkpoint_final.md").read_text(encoding="utf-8")
    assert md.startswith(
        f"# Evaluation: mlp-softmax\n\nCheckpoint `checkpoint_final` of `{run_dir}`"
    )
    assert "## Validation split (48 samples)" in md
    assert "## Train split (192 samples)" in md
    assert "| Class | Precision | Recall | F1 | Support |" in md
    assert "Confusion matrix (rows: true class, columns: predicted):" in md
    matrix = saved["splits"]["validation"]["confusion_matrix"]
    assert "| **0** | " + " | ".join(map(str, matrix[0])) + " |" in md


def test_evaluate_run_regression_report(runs: dict[str, RunResult]) -> None:
    run_dir = runs["linear-gd"].run_dir
    report = evaluate_run(run_dir, _config("linear-gd"), checkpoint="checkpoint_epoch_4")
    assert report["checkpoint"] == "checkpoint_epoch_4"
    assert (run_dir / "eval" / "checkpoint_epoch_4.json").is_file()
    assert (run_dir / "eval" / "checkpoint_epoch_4.md").is_file()
    validation = report["splits"]["validation"]
    assert list(validation) == ["n_samples", "mse", "rmse", "mae", "r2"]
    history = _json(run_dir / "metrics" / "metrics.json")["metrics"]
    assert validation["mse"] == pytest.approx(history[3]["val_mse"], rel=1e-12)
    assert validation["r2"] == pytest.approx(history[3]["val_r2"], rel=1e-12)
    assert validation["rmse"] == pytest.approx(math.sqrt(validation["mse"]))


def test_evaluate_run_metrics_filter(runs: dict[str, RunResult]) -> None:
    run_dir = runs["linear-closed"].run_dir
    report = evaluate_run(run_dir, _config("linear-closed"), metrics=["r2", "mse"])
    for scores in report["splits"].values():
        assert list(scores) == ["n_samples", "r2", "mse"]
    report = evaluate_run(runs["iris"].run_dir, _config("iris"), metrics=["accuracy"])
    assert list(report["splits"]["validation"]) == ["n_samples", "accuracy"]
    md = (runs["iris"].run_dir / "eval" / "checkpoint_final.md").read_text(encoding="utf-8")
    assert "Confusion matrix" not in md


def test_evaluate_run_unknown_metric_message(runs: dict[str, RunResult]) -> None:
    with pytest.raises(EvaluationError) as info:
        evaluate_run(
            runs["linear-closed"].run_dir, _config("linear-closed"), metrics=["auc", "mse"]
        )
    assert str(info.value) == (
        "Unknown metric(s) auc for a regression model. Available: mse, rmse, mae, r2."
    )
    with pytest.raises(EvaluationError) as info:
        evaluate_run(runs["iris"].run_dir, _config("iris"), metrics=["r2", "f2"])
    assert str(info.value) == (
        "Unknown metric(s) r2, f2 for a classification model. Available: accuracy, log_loss, "
        "macro_f1, per_class, confusion_matrix."
    )


def test_evaluate_run_without_validation_split(ws: Path) -> None:
    cfg = _config("linear-closed", name="no-val", training={"validation_fraction": 0})
    result = run_experiment(cfg, progress=False)
    assert list(result.summary["final_metrics"]) == ["epoch", "loss", "mse", "r2"]
    report = evaluate_run(result.run_dir, cfg)
    assert list(report["splits"]) == ["train"]


# --------------------------------------------------------------------------- Evaluator API


def test_evaluator_missing_checkpoint_lists_available_ones(runs: dict[str, RunResult]) -> None:
    run_dir = runs["linear-gd"].run_dir
    evaluator = Evaluator(run_dir)
    assert evaluator.available_checkpoints() == [
        "checkpoint_epoch_2",
        "checkpoint_epoch_4",
        "checkpoint_epoch_6",
        "checkpoint_final",
    ]
    with pytest.raises(EvaluationError) as info:
        evaluator.load_model("checkpoint_epoch_3")
    assert str(info.value) == (
        f"Checkpoint 'checkpoint_epoch_3' not found in {run_dir / 'checkpoints'}. Available "
        "checkpoints: checkpoint_epoch_2, checkpoint_epoch_4, checkpoint_epoch_6, "
        "checkpoint_final. Pass one with --checkpoint."
    )


def test_evaluator_run_without_checkpoints(ws: Path) -> None:
    cfg = _config("linear-closed", name="no-ckpt", output={"save_checkpoints": False})
    result = run_experiment(cfg, progress=False)
    assert not list((result.run_dir / "checkpoints").iterdir())
    assert result.summary["checkpoints"] == []
    with pytest.raises(EvaluationError) as info:
        Evaluator(result.run_dir).load_model()
    assert str(info.value) == (
        f"Checkpoint 'checkpoint_final' not found in {result.run_dir / 'checkpoints'}. This run "
        "saved no checkpoints (output.save_checkpoints may be false, or it stopped before the "
        "first one)."
    )


def test_evaluator_run_directory_not_found(ws: Path) -> None:
    with pytest.raises(EvaluationError) as info:
        Evaluator("runs/experiment/20241122_143025").load_model()
    assert str(info.value) == "Run directory not found: runs/experiment/20241122_143025"
    with pytest.raises(EvaluationError) as info:
        load_run_config(ws / "runs")
    assert str(info.value) == (
        f"No config.json in {ws / 'runs'}. Pass the experiment config with --config."
    )


def test_evaluator_evaluate_dataset_with_seed(runs: dict[str, RunResult]) -> None:
    from mlharness.datasets import SyntheticRegressionDataset

    evaluator = Evaluator(runs["linear-closed"].run_dir)
    dataset = SyntheticRegressionDataset(n_samples=300, n_features=5, noise_std=0.1)
    scores = evaluator.evaluate(dataset, seed=1)  # loads checkpoint_final by itself
    assert list(scores) == ["mse", "rmse", "mae", "r2"]
    X, y = dataset.generate(seed=1)
    pred = evaluator.model.predict(X)  # type: ignore[union-attr]
    assert scores["mse"] == pytest.approx(skm.mean_squared_error(y, pred))
    assert scores["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert scores["r2"] == pytest.approx(skm.r2_score(y, pred))
    assert scores["r2"] > 0.99  # same generator seed: the model fits this data
    unseen = evaluator.evaluate(dataset, seed=2)
    assert unseen["r2"] < 0.5  # other true coefficients


def test_evaluator_evaluate_classification(runs: dict[str, RunResult]) -> None:
    from mlharness.datasets import BundledDataset

    evaluator = Evaluator(runs["iris"].run_dir)
    evaluator.load_model("checkpoint_epoch_6")
    scores = evaluator.evaluate(BundledDataset("iris"))
    assert scores["accuracy"] > 0.75
    assert sum(map(sum, scores["confusion_matrix"])) == 150


# --------------------------------------------------------------------------- interruption


class _StopAfter:
    """Wraps a model's train_step to request a stop after ``n`` calls (as Ctrl+C would)."""

    def __init__(self, model: Any, n: int, request: Any) -> None:
        self.calls = 0
        self._step = model.train_step
        self._n = n
        self._request = request
        model.train_step = self

    def __call__(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        out = self._step(X, y)
        self.calls += 1
        if self.calls == self._n:
            self._request()
        return out  # type: ignore[no-any-return]


def test_graceful_interrupt_first_signal_sets_a_flag_second_raises() -> None:
    before = signal.getsignal(signal.SIGTERM)
    # What the test process started with: Python's default, or SIG_IGN under a shell that
    # started it in the background without job control.
    before_int = signal.getsignal(signal.SIGINT)
    with GracefulInterrupt() as stop:
        assert stop.requested is False
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested is True
        assert stop.signal_name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before
    assert signal.getsignal(signal.SIGINT) is before_int


def test_training_loop_stops_mid_epoch_when_interrupt_requested(ws: Path) -> None:
    from mlharness.datasets import SyntheticRegressionDataset
    from mlharness.models import LinearRegression

    dataset = SyntheticRegressionDataset(n_samples=200, n_features=5, seed=0)
    model = LinearRegression(seed=0, use_gradient_descent=True)
    stop = GracefulInterrupt()
    # 160 training rows / batch 32 = 5 steps per epoch: step 12 is in epoch 3.
    wrapper = _StopAfter(model, 12, lambda: setattr(stop, "requested", True))
    out = ws / "direct-interrupt"
    writer = MetricsWriter(out / "metrics", "direct", plot=False)
    loop = TrainingLoop(
        model=model,
        dataset=dataset,
        metrics_writer=writer,
        epochs=10,
        batch_size=32,
        seed=0,
        checkpoint_dir=out / "checkpoints",
        checkpoint_frequency=1,
        stop=stop,
        progress=False,
    )
    summary = loop.train()
    writer.close()
    assert wrapper.calls == 12
    assert summary["status"] == "interrupted"
    assert summary["epochs_completed"] == 2
    assert summary["epochs_planned"] == 10
    assert summary["checkpoints"] == [
        "checkpoint_epoch_1",
        "checkpoint_epoch_2",
        "checkpoint_interrupted",
    ]
    assert not (out / "checkpoints" / "checkpoint_final").exists()
    lines = (out / "metrics" / "metrics.ndjson").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert summary["final_metrics"] == json.loads(lines[-1])
    Evaluator(out).load_model("checkpoint_interrupted")  # the partial model loads


def test_interrupt_at_an_epoch_boundary_keeps_that_epoch(ws: Path) -> None:
    from mlharness.datasets import SyntheticRegressionDataset
    from mlharness.models import LinearRegression

    model = LinearRegression(seed=0, use_gradient_descent=True)
    stop = GracefulInterrupt()
    loop = TrainingLoop(
        model=model,
        dataset=SyntheticRegressionDataset(n_samples=200, n_features=5, seed=0),
        epochs=10,
        checkpoint_dir=ws / "boundary",
        stop=stop,
        progress=False,
    )
    original = loop.epoch_metrics

    def epoch_metrics(epoch: int, *args: Any) -> dict[str, Any]:
        if epoch == 3:
            stop.requested = True
        return original(epoch, *args)

    loop.epoch_metrics = epoch_metrics  # type: ignore[method-assign]
    summary = loop.train()
    assert summary["status"] == "interrupted"
    assert summary["epochs_completed"] == 3
    assert summary["checkpoints"][-2:] == ["checkpoint_epoch_3", "checkpoint_interrupted"]


def test_sigint_during_run_experiment_marks_the_run_interrupted(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_model = runner.build_model
    wrappers: list[_StopAfter] = []

    def build_and_wrap(cfg: ExperimentConfig, dataset: Any) -> Any:
        model = build_model(cfg, dataset)
        wrappers.append(_StopAfter(model, 12, lambda: signal.raise_signal(signal.SIGINT)))
        return model

    monkeypatch.setattr(runner, "build_model", build_and_wrap)
    cfg = _config("linear-gd", name="sigint", training={"epochs": 10})
    before = signal.getsignal(signal.SIGINT)
    result = run_experiment(cfg, progress=False)
    assert result.status == "interrupted"
    assert result.summary["epochs_completed"] == 2
    run_dir = result.run_dir
    assert _json(run_dir / "summary.json")["status"] == "interrupted"
    entry = [r for r in _json(ws / "runs" / "index.json")["runs"] if r["experiment"] == "sigint"]
    assert entry[0]["status"] == "interrupted"
    assert (run_dir / "checkpoints" / "checkpoint_interrupted" / "model.json").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "checkpoint_epoch_2",
        "checkpoint_interrupted",
    ]
    history = _json(run_dir / "metrics" / "metrics.json")["metrics"]
    assert [r["epoch"] for r in history] == [1, 2]
    assert "Interrupted after 2 completed epoch(s)" in (run_dir / "logs" / "console.log").read_text(
        encoding="utf-8"
    )
    # The handler is restored afterwards: SIGINT is what it was before the run.
    assert signal.getsignal(signal.SIGINT) is before


def test_a_failing_run_is_marked_failed(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_model = runner.build_model

    def broken(cfg: ExperimentConfig, dataset: Any) -> Any:
        model = build_model(cfg, dataset)

        def explode(_: Any) -> None:
            raise RuntimeError("disk full")

        _StopAfter(model, 3, lambda: explode(None))
        return model

    monkeypatch.setattr(runner, "build_model", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        run_experiment(_config("linear-gd", name="failing"), progress=False)
    (run_dir,) = (ws / "runs" / "failing").iterdir()
    summary = _json(run_dir / "summary.json")
    assert summary["status"] == "failed"
    assert summary["error"] == "RuntimeError: disk full"
    entry = [r for r in _json(ws / "runs" / "index.json")["runs"] if r["experiment"] == "failing"]
    assert entry[0]["status"] == "failed"
    assert (run_dir / "metrics" / "metrics.json").is_file()


# --------------------------------------------------------------------------- seed Python API


def test_seed_training_flow(ws: Path) -> None:
    from mlharness.datasets import SyntheticRegressionDataset
    from mlharness.evaluation import Evaluator as PublicEvaluator
    from mlharness.history import (
        generate_markdown_summary,
        get_runs_by_experiment,
        list_all_runs,
    )
    from mlharness.metrics import MetricsWriter as PublicMetricsWriter
    from mlharness.models import LinearRegression
    from mlharness.training import OutputManager
    from mlharness.training import TrainingLoop as PublicTrainingLoop

    dataset = SyntheticRegressionDataset(n_samples=1000, n_features=20, seed=42)
    model = LinearRegression(seed=42, use_gradient_descent=True)
    output_manager = OutputManager(
        experiment_name="my_experiment", base_dir="seed-runs", maintain_index=True
    )
    metrics_writer = PublicMetricsWriter(
        output_dir=output_manager.get_metrics_dir(), experiment_name="my_experiment"
    )
    training_loop = PublicTrainingLoop(
        model=model,
        dataset=dataset,
        metrics_writer=metrics_writer,
        epochs=50,
        batch_size=32,
        seed=42,
        checkpoint_dir=output_manager.get_checkpoint_dir(),
        checkpoint_frequency=10,
    )
    summary = training_loop.train()
    assert summary["status"] == "completed"
    assert math.isfinite(summary["final_metrics"]["loss"])
    metrics_writer.close(summary["final_metrics"])
    output_manager.finish(summary)

    run_dir = output_manager.get_run_dir()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "checkpoint_epoch_10",
        "checkpoint_epoch_20",
        "checkpoint_epoch_30",
        "checkpoint_epoch_40",
        "checkpoint_epoch_50",
        "checkpoint_final",
    ]
    assert sorted(p.name for p in (run_dir / "metrics").iterdir()) == [
        "metrics.json",
        "metrics.md",
        "metrics.ndjson",
    ]
    assert PLOT_REQUESTS[-1] == "my_experiment"  # curves.png, stubbed here for speed
    history = _json(run_dir / "metrics" / "metrics.json")["metrics"]
    assert len(history) == 50
    assert history[-1]["loss"] < history[0]["loss"]

    runs = list_all_runs(Path("seed-runs/index.json"))
    assert len(runs) == 1
    assert runs[0]["status"] == "completed"
    mine = get_runs_by_experiment(Path("seed-runs/index.json"), "my_experiment")
    assert mine == runs
    text = generate_markdown_summary(runs, output_path=Path("seed-runs/HISTORY.md"))
    assert f"`{runs[0]['run_dir']}`" in text
    assert Path("seed-runs/HISTORY.md").read_text(encoding="utf-8") == text

    evaluator = PublicEvaluator(run_dir=run_dir)
    loaded = evaluator.load_model(checkpoint_name="checkpoint_final")
    scores = evaluator.evaluate(dataset, seed=42)
    X, y = dataset.generate(seed=42)
    np.testing.assert_allclose(loaded.predict(X), model.predict(X), rtol=0, atol=0)
    assert scores["mse"] == pytest.approx(skm.mean_squared_error(y, model.predict(X)))
    assert scores["r2"] == pytest.approx(skm.r2_score(y, model.predict(X)))


def test_seed_training_flow_leaves_whole_history_files(ws: Path) -> None:
    from mlharness.datasets import SyntheticRegressionDataset
    from mlharness.metrics import MetricsWriter as PublicMetricsWriter
    from mlharness.models import LinearRegression
    from mlharness.training import OutputManager
    from mlharness.training import TrainingLoop as PublicTrainingLoop

    output_manager = OutputManager(experiment_name="flow", base_dir="seed-runs")
    metrics_writer = PublicMetricsWriter(
        output_dir=output_manager.get_metrics_dir(), experiment_name="flow"
    )
    PublicTrainingLoop(
        model=LinearRegression(seed=42, use_gradient_descent=True),
        dataset=SyntheticRegressionDataset(n_samples=100, n_features=3, seed=42),
        metrics_writer=metrics_writer,
        epochs=2,
        checkpoint_dir=output_manager.get_checkpoint_dir(),
    ).train()
    metrics_dir = output_manager.get_metrics_dir()
    assert (metrics_dir / "metrics.json").is_file()
    assert (metrics_dir / "metrics.md").is_file()


def test_evaluator_evaluate_defaults_to_the_datasets_own_seed(
    runs: dict[str, RunResult],
) -> None:
    from mlharness.datasets import SyntheticRegressionDataset

    evaluator = Evaluator(runs["linear-closed"].run_dir)
    dataset = SyntheticRegressionDataset(n_samples=100, n_features=5, noise_std=0.1, seed=1)
    assert evaluator.evaluate(dataset) == evaluator.evaluate(dataset, seed=1)


@pytest.mark.parametrize("argument", ["checkpoint_frequency", "batch_size", "epochs"])
def test_training_loop_rejects_non_positive_arguments(ws: Path, argument: str) -> None:
    from mlharness.datasets import SyntheticRegressionDataset
    from mlharness.models import LinearRegression

    loop = TrainingLoop(
        model=LinearRegression(seed=0, use_gradient_descent=True),
        dataset=SyntheticRegressionDataset(n_samples=50, n_features=2, seed=0),
        progress=False,
        **{argument: 0},
    )
    with pytest.raises(ValueError, match=argument):
        loop.train()


def test_output_directory_outside_the_workspace_is_rejected_before_anything_runs(
    ws: Path,
) -> None:
    from mlharness.errors import PathSafetyError

    cfg = _config("linear-closed", name="escape", output={"directory": "../escaped"})
    with pytest.raises(PathSafetyError) as info:
        run_experiment(cfg, progress=False)
    assert str(info.value) == (
        f"Output directory '../escaped' resolves to {ws.resolve().parent / 'escaped'}, which "
        f"is outside the workspace root {ws.resolve()}. Use a path inside the workspace (for "
        "example 'runs'), or set MLX_WORKSPACE to a directory that contains it."
    )
    assert not (ws.parent / "escaped").exists()


# --------------------------------------------------------------------------- metric functions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regression_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=50)
    pred = y + rng.normal(scale=0.5, size=50)
    got = regression_metrics(y, pred)
    assert got["mse"] == pytest.approx(skm.mean_squared_error(y, pred), rel=1e-12)
    assert got["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, pred)), rel=1e-12)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), rel=1e-12)
    assert got["r2"] == pytest.approx(skm.r2_score(y, pred), rel=1e-12)


def test_regression_metrics_edge_cases_match_sklearn() -> None:
    constant = np.full(5, 3.0)
    for pred in (constant, constant + 1.0):
        assert regression_metrics(constant, pred)["r2"] == skm.r2_score(constant, pred)
    y = np.array([[1.0], [2.0], [3.0]])  # column vectors are flattened
    pred = np.array([1.0, 2.5, 2.0])
    assert regression_metrics(y, pred)["r2"] == pytest.approx(skm.r2_score(y.ravel(), pred))


@pytest.mark.parametrize(("seed", "k"), [(0, 2), (1, 3), (2, 5)])
def test_classification_metrics_match_sklearn(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=80)
    logits = rng.normal(size=(80, k)) + 1.5 * np.eye(k)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = proba.argmax(axis=1)
    got = classification_metrics(y, proba)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, labels), rel=1e-12)
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=list(range(k))), rel=1e-9)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, labels, labels=list(range(k)), zero_division=0
    )
    for c in range(k):
        assert got["per_class"][str(c)] == {
            "precision": pytest.approx(precision[c], rel=1e-12),
            "recall": pytest.approx(recall[c], rel=1e-12),
            "f1": pytest.approx(f1[c], rel=1e-12),
            "support": int(support[c]),
        }
    assert got["macro_f1"] == pytest.approx(
        skm.f1_score(y, labels, average="macro", zero_division=0), rel=1e-12
    )
    assert (
        got["confusion_matrix"] == skm.confusion_matrix(y, labels, labels=list(range(k))).tolist()
    )


def test_classification_metrics_with_a_never_predicted_class() -> None:
    y = np.array([0, 1, 2, 2, 1, 0])
    proba = np.array(
        [
            [0.9, 0.1, 0.0],
            [0.2, 0.8, 0.0],
            [0.6, 0.4, 0.0],
            [0.3, 0.7, 0.0],
            [0.1, 0.9, 0.0],
            [0.8, 0.2, 0.0],
        ]
    )
    got = classification_metrics(y, proba, n_classes=3)
    labels = proba.argmax(axis=1)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y, labels, labels=[0, 1, 2], zero_division=0
    )
    assert [got["per_class"][str(c)]["precision"] for c in range(3)] == pytest.approx(precision)
    assert [got["per_class"][str(c)]["recall"] for c in range(3)] == pytest.approx(recall)
    assert [got["per_class"][str(c)]["f1"] for c in range(3)] == pytest.approx(f1)
    assert got["confusion_matrix"] == skm.confusion_matrix(y, labels, labels=[0, 1, 2]).tolist()
    assert math.isfinite(got["log_loss"])  # p=0 for the true class is clipped, not -log(0)


def test_sigmoid_output_probabilities_match_sklearn_log_loss() -> None:
    class _Sigmoid:
        def predict(self, X: np.ndarray) -> np.ndarray:
            return np.asarray(1 / (1 + np.exp(-X[:, 0])))

    X = np.linspace(-3, 3, 21)[:, None]
    y = (X[:, 0] + np.sin(7 * X[:, 0]) > 0).astype(np.int64)
    labels, proba = predict_labels(_Sigmoid(), X)  # type: ignore[arg-type]
    assert proba.shape == (21, 2)
    got = classification_metrics(y, proba)
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba[:, 1]), rel=1e-9)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, labels))
