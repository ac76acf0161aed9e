"""Preparing arrays for training: the seeded train/validation split and standardisation.

Both are fitted on the training split only, and both are deterministic, so evaluation can
rebuild exactly the rows and the scaling a run trained with.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from mlharness.errors import DatasetError
from mlharness.tabular.datasets import check_seed


def _largest_remainder(ideal: np.ndarray, caps: np.ndarray, total: int) -> np.ndarray:
    """Integers near ``ideal`` that sum to ``total`` and stay within ``0..caps``."""
    counts: np.ndarray = np.minimum(np.floor(ideal).astype(np.int64), caps)
    remainder = ideal - counts
    # Hand out the missing units by largest fractional part; ties go to lower class indices.
    for c in np.argsort(-remainder, kind="stable"):
        if counts.sum() >= total:
            break
        if counts[c] < caps[c]:
            counts[c] += 1
    return counts


def train_val_split(
    X: np.ndarray,
    y: np.ndarray,
    validation_fraction: float,
    seed: int,
    stratify: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split rows into ``(X_train, X_val, y_train, y_val)`` reproducibly from ``seed``.

    The validation size is ``round(fraction * n)``, at least one row when the fraction is
    positive, and always leaves a training row. Stratified splits give each class its share
    (largest remainders) while leaving every class at least one training row, so a
    classifier's output layer sees all labels. Both parts are shuffled.
    """
    if (
        isinstance(validation_fraction, bool)
        or not isinstance(validation_fraction, numbers.Real)
        or not 0.0 <= float(validation_fraction) < 1.0
    ):
        raise DatasetError(
            f"validation_fraction must be a number at least 0 and less than 1, "
            f"got {validation_fraction!r}."
        )
    fraction = float(validation_fraction)
    X = np.asarray(X)
    y = np.asarray(y)
    n = len(y)
    if X.shape[0] != n:
        raise DatasetError(
            f"X has {X.shape[0]} rows but y has {n} values; they must describe the same samples."
        )
    if n < 1:
        raise DatasetError("Cannot split an empty dataset; it needs at least one sample.")
    rng = np.random.default_rng(check_seed(seed, "split seed"))

    if not stratify:
        n_val = min(max(1, round(fraction * n)), n - 1) if fraction > 0 else 0
        order = rng.permutation(n)
        val_idx, train_idx = order[:n_val], order[n_val:]
    else:
        if y.dtype.kind not in "iub":
            raise DatasetError(
                "Stratified splitting needs integer class labels, but y holds "
                f"{y.dtype} values; turn stratification off for regression targets."
            )
        labels, counts = np.unique(y, return_counts=True)
        caps = counts - 1  # every class keeps one training row
        total = min(max(1, round(fraction * n)), int(caps.sum())) if fraction > 0 else 0
        per_class = _largest_remainder(fraction * counts, caps, total)
        val_parts: list[np.ndarray] = []
        train_parts: list[np.ndarray] = []
        for label, k in zip(labels, per_class, strict=True):
            members = rng.permutation(np.flatnonzero(y == label))
            val_parts.append(members[:k])
            train_parts.append(members[k:])
        val_idx = rng.permutation(np.concatenate(val_parts))
        train_idx = rng.permutation(np.concatenate(train_parts))
    return X[train_idx], X[val_idx], y[train_idx], y[val_idx]


# --------------------------------------------------------------------------- scaling


class Standardizer:
    """Per-column ``(x - mean) / std`` learned on training data and stored with checkpoints.

    Constant (or numerically constant) columns get a std of 1, so they map to 0 instead of
    dividing by zero; a model trained on them then ignores them.
    """

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None

    @staticmethod
    def _as_2d(X: np.ndarray, what: str) -> np.ndarray:
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2:
            raise DatasetError(
                f"Standardizer.{what} needs a 2-D array (samples x features), got "
                f"{arr.ndim} dimension(s)."
            )
        return arr

    def fit(self, X: np.ndarray) -> Standardizer:
        arr = self._as_2d(X, "fit")
        if arr.shape[0] == 0:
            raise DatasetError("Standardizer.fit needs at least one sample, got none.")
        mean = arr.mean(axis=0)
        std = arr.std(axis=0)
        # Relative tolerance: a constant column's computed std is rounding noise, not 0.
        std[std <= 1e-12 * np.maximum(1.0, np.abs(mean))] = 1.0
        self.mean_, self.std_ = mean, std
        return self

    def _state(self, arr: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
        if self.mean_ is None or self.std_ is None:
            raise DatasetError(
                f"Standardizer is not fitted: call fit(X) before {what}(X), or restore it "
                "with Standardizer.from_dict(...)."
            )
        if arr.shape[1] != self.mean_.shape[0]:
            raise DatasetError(
                f"Standardizer was fitted on {self.mean_.shape[0]} features, but {what} got "
                f"{arr.shape[1]}; use data with the same columns as in training."
            )
        return self.mean_, self.std_

    def transform(self, X: np.ndarray) -> np.ndarray:
        arr = self._as_2d(X, "transform")
        mean, std = self._state(arr, "transform")
        out: np.ndarray = (arr - mean) / std
        return out

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).transform(X)

    def inverse_transform(self, X: np.ndarray) -> np.ndarray:
        arr = self._as_2d(X, "inverse_transform")
        mean, std = self._state(arr, "inverse_transform")
        out: np.ndarray = arr * std + mean
        return out

    def to_dict(self) -> dict[str, list[float]]:
        if self.mean_ is None or self.std_ is None:
            raise DatasetError("Standardizer is not fitted: call fit(X) before to_dict().")
        return {"mean": self.mean_.tolist(), "std": self.std_.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Standardizer:
        try:
            mean = np.asarray(d["mean"], dtype=np.float64)
            std = np.asarray(d["std"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(
                "Standardizer state must be a mapping with 'mean' and 'std' lists of numbers "
                f"(as written by to_dict()); got {type(d).__name__} that fails: {exc}."
            ) from exc
        if mean.ndim != 1 or mean.shape != std.shape or not (std > 0).all():
            raise DatasetError(
                "Standardizer state is inconsistent: 'mean' and 'std' must be lists of the "
                "same length with every std positive; the saved state is corrupt."
            )
        scaler = cls()
        scaler.mean_, scaler.std_ = mean, std
        return scaler
