"""Metrics for tabular models, and the Evaluator that re-scores a saved run.

The metric functions are plain NumPy so training can compute them every epoch without
importing scikit-learn; the tests check them against ``sklearn.metrics``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlharness.errors import CheckpointError, EvaluationError

if TYPE_CHECKING:
    from mlharness.tabular.base import BaseModel
    from mlharness.tabular.datasets import BaseDataset

PREPROCESSING_FILE = "preprocessing.json"


def predict_labels(model: BaseModel, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class labels and class probabilities (n, k) from a classifier's output."""
    out = np.asarray(model.predict(X), dtype=np.float64)
    if out.ndim == 1:  # sigmoid: probability of class 1
        proba = np.column_stack([1.0 - out, out])
    else:
        proba = out
    return proba.argmax(axis=1), proba


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MSE, RMSE, MAE and R² (R² is 0 for a constant target predicted exactly, as sklearn)."""
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.float64).ravel()
    err = y_pred - y_true
    mse = float(np.mean(err**2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    ss_res = float(np.sum(err**2))
    if ss_tot > 0:
        r2 = 1.0 - ss_res / ss_tot
    else:
        r2 = 1.0 if ss_res == 0 else 0.0
    return {"mse": mse, "rmse": float(np.sqrt(mse)), "mae": float(np.mean(np.abs(err))), "r2": r2}


def accuracy(y_true: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(y_true).ravel() == np.asarray(labels).ravel()))


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, n_classes: int | None = None
) -> dict[str, Any]:
    """Accuracy, log loss, per-class precision/recall/F1 and the confusion matrix.

    Rows of the confusion matrix are true classes, columns predicted ones (sklearn's layout).
    Precision of a class never predicted is 0, as sklearn's ``zero_division=0``.
    """
    y = np.asarray(y_true, dtype=np.int64).ravel()
    proba = np.asarray(proba, dtype=np.float64)
    k = n_classes or proba.shape[1]
    labels = proba.argmax(axis=1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y, labels), 1)
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    actual = confusion.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    eps = 1e-15
    p_true = np.clip(proba[np.arange(len(y)), y], eps, 1.0)
    return {
        "accuracy": accuracy(y, labels),
        "log_loss": float(-np.mean(np.log(p_true))),
        "macro_f1": float(f1.mean()),
        "per_class": {
            str(c): {
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "support": int(actual[c]),
            }
            for c in range(k)
        },
        "confusion_matrix": confusion.tolist(),
    }


def score(model: BaseModel, X: np.ndarray, y: np.ndarray, n_classes: int | None) -> dict[str, Any]:
    """The full evaluation metrics of ``model`` on (X, y), chosen by the model's task."""
    if model.task == "classification":
        _, proba = predict_labels(model, X)
        return classification_metrics(y, proba, n_classes)
    return regression_metrics(y, model.predict(X))


class Evaluator:
    """Re-scores a trained run from its checkpoints without retraining.

    >>> evaluator = Evaluator("runs/my_experiment/20241122_143025")  # doctest: +SKIP
    >>> model = evaluator.load_model("checkpoint_final")  # doctest: +SKIP
    >>> evaluator.evaluate(dataset, seed=42)["mse"]  # doctest: +SKIP
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.model: BaseModel | None = None

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def available_checkpoints(self) -> list[str]:
        if not self.checkpoint_dir.is_dir():
            return []
        return sorted(
            (p.name for p in self.checkpoint_dir.iterdir() if (p / "model.json").is_file()),
            key=_checkpoint_order,
        )

    def load_model(self, checkpoint_name: str = "checkpoint_final") -> BaseModel:
        """Load a checkpoint of this run; a missing one names the checkpoints that exist."""
        from mlharness.tabular.factory import load_model

        if not self.run_dir.is_dir():
            raise EvaluationError(f"Run directory not found: {self.run_dir}")
        path = self.checkpoint_dir / checkpoint_name
        if not (path / "model.json").is_file():
            available = self.available_checkpoints()
            hint = (
                f"Available checkpoints: {', '.join(available)}. Pass one with --checkpoint."
                if available
                else "This run saved no checkpoints (output.save_checkpoints may be false, "
                "or it stopped before the first one)."
            )
            raise EvaluationError(
                f"Checkpoint '{checkpoint_name}' not found in {self.checkpoint_dir}. {hint}"
            )
        try:
            self.model = load_model(path)
        except CheckpointError as exc:
            raise EvaluationError(str(exc)) from exc
        return self.model

    def preprocessing(self) -> dict[str, Any] | None:
        """The standardisation statistics the run trained with, if it used any."""
        path = self.checkpoint_dir / PREPROCESSING_FILE
        if not path.is_file():
            return None
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data

    def transform(self, X: np.ndarray) -> np.ndarray:
        stats = self.preprocessing()
        if stats is None:
            return X
        from mlharness.tabular.preprocessing import Standardizer

        return Standardizer.from_dict(stats).transform(X)

    def evaluate(self, dataset: BaseDataset, seed: int | None = None) -> dict[str, Any]:
        """Score the loaded model (``checkpoint_final`` if none is) on the whole dataset.

        ``seed`` generates synthetic data; None keeps the dataset's own seed.
        """
        X, y = dataset.generate(seed=seed)
        return self.evaluate_arrays(X, y, dataset.n_classes)

    def evaluate_arrays(
        self, X: np.ndarray, y: np.ndarray, n_classes: int | None = None
    ) -> dict[str, Any]:
        model = self.model or self.load_model()
        return score(model, self.transform(X), y, n_classes)


def _checkpoint_order(name: str) -> tuple[int, str]:
    tail = name.rsplit("_", 1)[-1]
    return (int(tail) if tail.isdigit() else 10**9, name)
