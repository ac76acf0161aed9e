"""Datasets for the tabular engine: synthetic generators and scikit-learn's bundled sets.

Every dataset returns plain NumPy arrays from ``generate(seed)``: ``X`` as float64 of shape
``(n_samples, n_features)`` and ``y`` as float64 targets (regression) or int64 labels
``0..k-1`` (classification). Runs are reproducible because synthetic data are a pure function
of their parameters and the seed (``np.random.default_rng``), and fixed data sets ignore it.
CSV files are in :mod:`mlharness.tabular.csv_dataset`, splitting and scaling in
:mod:`mlharness.tabular.preprocessing`.

Constructors check their parameters so that a bad config fails before any work starts
(``mlx run-experiment --dry-run`` builds the dataset and stops). scikit-learn is imported
only when a bundled dataset is loaded, so importing this module stays cheap.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mlharness.errors import DatasetError

Task = Literal["regression", "classification"]

SUPPORTED_DATASETS: tuple[str, ...] = (
    "synthetic_regression",
    "synthetic_classification",
    "iris",
    "wine",
    "breast_cancer",
    "digits",
    "diabetes",
    "csv",
)

# Named in the seed's example configs; they get a clearer message than a typo does.
PLANNED_DATASETS: tuple[str, ...] = ("mnist", "cifar10", "cifar100", "imagenet")

MEMORY_LIMIT_BYTES = 1024**3
"""Largest feature matrix (float64) a synthetic dataset may generate: 1 GiB."""


# --------------------------------------------------------------------------- validation


def _positive_int(name: str, value: object) -> int:
    # bool is an Integral, but n_samples=True is a config mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise DatasetError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _real(name: str, value: object, *, positive: bool) -> float:
    kind = "a positive" if positive else "a non-negative"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DatasetError(f"{name} must be {kind} number, got {value!r}.")
    result = float(value)
    if not math.isfinite(result) or result < 0 or (positive and result == 0):
        raise DatasetError(f"{name} must be {kind} number, got {value!r}.")
    return result


def check_seed(value: object, name: str = "seed") -> int | None:
    if value is None:
        return None
    # default_rng rejects negative seeds with a message that does not name the parameter.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise DatasetError(f"{name} must be a non-negative integer or omitted, got {value!r}.")
    return int(value)


def _check_memory(n_samples: int, n_features: int) -> None:
    size = n_samples * n_features * 8
    if size > MEMORY_LIMIT_BYTES:
        raise DatasetError(
            f"Dataset size exceeds 1GB limit: {n_samples} samples x {n_features} features x "
            f"8 bytes = {size:,} bytes ({size / 1024**3:.2f} GiB) for the feature matrix alone. "
            f"Reduce n_samples or n_features so that n_samples * n_features is at most "
            f"{MEMORY_LIMIT_BYTES // 8:,}."
        )


# --------------------------------------------------------------------------- base class


class BaseDataset(ABC):
    """The one protocol the training loop needs: arrays, their task, and a JSON description."""

    #: The name used in configs (``dataset.name``).
    name: str

    @abstractmethod
    def generate(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(X, y)``; synthetic data depend on ``seed``, fixed data ignore it."""

    @property
    @abstractmethod
    def task(self) -> Task:
        """``"regression"`` or ``"classification"``: decides the model head, loss and metrics."""

    @property
    @abstractmethod
    def n_samples(self) -> int:
        """Number of rows ``generate`` returns."""

    @property
    @abstractmethod
    def n_features(self) -> int:
        """Number of columns of ``X``: the model's input width."""

    @property
    @abstractmethod
    def n_classes(self) -> int | None:
        """Number of labels for classification (the output width); None for regression."""

    @abstractmethod
    def _parameters(self) -> dict[str, Any]:
        """The constructor arguments, JSON-friendly, so a run records what built its data."""

    def _details(self) -> dict[str, Any]:
        """Facts about the data beyond the parameters (true coefficients, class names)."""
        return {}

    def get_metadata(self) -> dict[str, Any]:
        """Describe the data for ``config.json`` and the run summary; values are JSON types."""
        return {
            "name": self.name,
            "task": self.task,
            "n_samples": self.n_samples,
            "n_features": self.n_features,
            "n_classes": self.n_classes,
            "parameters": self._parameters(),
            **self._details(),
        }


# --------------------------------------------------------------------------- synthetic data


class _SyntheticDataset(BaseDataset):
    """Shared checks and seed handling of the two generators."""

    def __init__(
        self, n_samples: int, n_features: int, n_informative: int | None, seed: int | None
    ) -> None:
        self._n_samples = _positive_int("n_samples", n_samples)
        self._n_features = _positive_int("n_features", n_features)
        self.n_informative = self._n_features if n_informative is None else n_informative
        if (
            isinstance(self.n_informative, bool)
            or not isinstance(self.n_informative, numbers.Integral)
            or not 1 <= int(self.n_informative) <= self._n_features
        ):
            raise DatasetError(
                f"n_informative must be an integer between 1 and n_features "
                f"({self._n_features}), got {n_informative!r}."
            )
        self.n_informative = int(self.n_informative)
        self.seed: int | None = check_seed(seed)
        _check_memory(self._n_samples, self._n_features)
        # get_metadata reports the generator facts of the data last generated.
        self._last_seed: int | None = None

    @property
    def n_samples(self) -> int:
        return self._n_samples

    @property
    def n_features(self) -> int:
        return self._n_features

    def _resolve_seed(self, seed: int | None) -> int:
        resolved = check_seed(seed) if seed is not None else self.seed
        if resolved is None:
            raise DatasetError(
                f"Cannot generate {self.name} data without a seed. A seed must be provided: "
                "pass generate(seed=...) or set params.seed (dataset.params.seed in the config)."
            )
        self._last_seed = resolved
        return resolved

    def _metadata_seed(self) -> int | None:
        return self._last_seed if self._last_seed is not None else self.seed


class SyntheticRegressionDataset(_SyntheticDataset):
    """``y = X @ w + noise`` with ``X ~ N(0, 1)`` and Gaussian noise of ``noise_std``.

    The first ``n_informative`` weights have a random sign and a magnitude drawn uniformly
    from [0.5, 1.5), so every informative feature carries a clear signal (never a weight
    near zero) at a scale comparable to the unit-variance inputs; the other weights are 0.
    There is no intercept. The weights are the first draws from the seeded generator, so
    the same seed gives the same true coefficients whatever ``n_samples`` is.
    """

    name = "synthetic_regression"

    def __init__(
        self,
        n_samples: int = 1000,
        n_features: int = 10,
        n_informative: int | None = None,
        noise_std: float = 0.1,
        seed: int | None = None,
    ) -> None:
        super().__init__(n_samples, n_features, n_informative, seed)
        self.noise_std = _real("noise_std", noise_std, positive=False)

    @property
    def task(self) -> Task:
        return "regression"

    @property
    def n_classes(self) -> int | None:
        return None

    def _coefficients(self, rng: np.random.Generator) -> np.ndarray:
        k = self.n_informative
        weights = np.zeros(self._n_features, dtype=np.float64)
        weights[:k] = rng.uniform(0.5, 1.5, size=k) * rng.choice([-1.0, 1.0], size=k)
        return weights

    def coefficients(self, seed: int | None = None) -> np.ndarray:
        """The true weights ``w`` behind ``generate(seed)``: what a perfect model recovers."""
        resolved = check_seed(seed) if seed is not None else self.seed
        if resolved is None:
            raise DatasetError(
                "Cannot compute the true coefficients without a seed. A seed must be provided: "
                "pass coefficients(seed=...) or set params.seed."
            )
        return self._coefficients(np.random.default_rng(resolved))

    def generate(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self._resolve_seed(seed))
        weights = self._coefficients(rng)
        X = rng.standard_normal((self._n_samples, self._n_features))
        y = X @ weights + rng.normal(0.0, self.noise_std, size=self._n_samples)
        return X, y

    def _parameters(self) -> dict[str, Any]:
        return {
            "n_samples": self._n_samples,
            "n_features": self._n_features,
            "n_informative": self.n_informative,
            "noise_std": self.noise_std,
            "seed": self.seed,
        }

    def _details(self) -> dict[str, Any]:
        seed = self._metadata_seed()
        coefficients = None if seed is None else self.coefficients(seed).tolist()
        return {
            "generator_seed": seed,
            "informative_features": list(range(self.n_informative)),
            "coefficients": coefficients,
            "intercept": 0.0,
        }


class SyntheticClassificationDataset(_SyntheticDataset):
    """Unit-variance Gaussian clusters, one per class, in the first ``n_informative`` features.

    Class means are distinct points of a regular grid with spacing ``2 * class_sep``, chosen
    at random (like scikit-learn's hypercube vertices, but the grid also fits more classes
    than vertices): any two class means are at least ``2 * class_sep`` apart, so a larger
    ``class_sep`` always makes the problem easier, and for a given seed changing it only
    rescales the same layout. The remaining features are N(0, 1) noise. Classes are balanced
    (sizes differ by at most one) and rows are shuffled.
    """

    name = "synthetic_classification"

    def __init__(
        self,
        n_samples: int = 1000,
        n_features: int = 10,
        n_informative: int | None = None,
        n_classes: int = 2,
        class_sep: float = 1.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(n_samples, n_features, n_informative, seed)
        if (
            isinstance(n_classes, bool)
            or not isinstance(n_classes, numbers.Integral)
            or int(n_classes) < 2
        ):
            raise DatasetError(f"n_classes must be an integer of at least 2, got {n_classes!r}.")
        self._n_classes: int = int(n_classes)
        if self._n_classes > self._n_samples:
            raise DatasetError(
                f"n_samples ({self._n_samples}) must be at least n_classes ({self._n_classes}) "
                "so that every class has a sample; raise n_samples or lower n_classes."
            )
        self.class_sep: float = _real("class_sep", class_sep, positive=True)

    @property
    def task(self) -> Task:
        return "classification"

    @property
    def n_classes(self) -> int | None:
        return self._n_classes

    def _means(self, rng: np.random.Generator) -> np.ndarray:
        """Distinct random points of the grid ``{0..m-1}^d`` (the smallest that holds them all),
        centred on the origin and spaced ``2 * class_sep``."""
        k, d = self._n_classes, self.n_informative
        m = 2
        while m**d < k:
            m += 1
        if m**d <= 1_000_000:
            flat = rng.choice(m**d, size=k, replace=False)
            points = np.stack(np.unravel_index(flat, (m,) * d), axis=1)
        else:
            # Too many points to index: random rows almost never collide, redraw if they do.
            points = rng.integers(0, m, size=(k, d))
            while len(np.unique(points, axis=0)) < k:
                points = rng.integers(0, m, size=(k, d))
        centred = points.astype(np.float64) - (m - 1) / 2.0
        return np.asarray(2.0 * self.class_sep * centred, dtype=np.float64)

    def class_means(self, seed: int | None = None) -> np.ndarray:
        """The cluster centres ``(n_classes, n_informative)`` behind ``generate(seed)``."""
        resolved = check_seed(seed) if seed is not None else self.seed
        if resolved is None:
            raise DatasetError(
                "Cannot compute the class means without a seed. A seed must be provided: "
                "pass class_means(seed=...) or set params.seed."
            )
        return self._means(np.random.default_rng(resolved))

    def class_counts(self) -> list[int]:
        """Samples per class: balanced, the first ``n_samples % n_classes`` get one more."""
        base, extra = divmod(self._n_samples, self._n_classes)
        return [base + (1 if c < extra else 0) for c in range(self._n_classes)]

    def generate(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self._resolve_seed(seed))
        means = self._means(rng)
        y = np.repeat(np.arange(self._n_classes, dtype=np.int64), self.class_counts())
        X = rng.standard_normal((self._n_samples, self._n_features))
        X[:, : self.n_informative] += means[y]
        order = rng.permutation(self._n_samples)
        return np.ascontiguousarray(X[order]), y[order]

    def _parameters(self) -> dict[str, Any]:
        return {
            "n_samples": self._n_samples,
            "n_features": self._n_features,
            "n_informative": self.n_informative,
            "n_classes": self._n_classes,
            "class_sep": self.class_sep,
            "seed": self.seed,
        }

    def _details(self) -> dict[str, Any]:
        seed = self._metadata_seed()
        means = None if seed is None else self.class_means(seed).tolist()
        return {
            "generator_seed": seed,
            "informative_features": list(range(self.n_informative)),
            "class_means": means,
            "class_counts": self.class_counts(),
        }


# --------------------------------------------------------------------------- bundled data


@dataclass(frozen=True)
class _Bundled:
    loader: str
    task: Task
    n_samples: int
    n_features: int
    n_classes: int | None


# Shapes are known up front so dry runs and model building need not import scikit-learn.
_BUNDLED: dict[str, _Bundled] = {
    "iris": _Bundled("load_iris", "classification", 150, 4, 3),
    "wine": _Bundled("load_wine", "classification", 178, 13, 3),
    "breast_cancer": _Bundled("load_breast_cancer", "classification", 569, 30, 2),
    "digits": _Bundled("load_digits", "classification", 1797, 64, 10),
    "diabetes": _Bundled("load_diabetes", "regression", 442, 10, None),
}


class BundledDataset(BaseDataset):
    """A small real data set shipped inside scikit-learn: loads offline, never downloads.

    The data are fixed, so ``seed`` is accepted (configs may set it for every dataset) and
    ignored; the training loop's split seed decides which rows validate. ``diabetes`` comes
    unscaled (scikit-learn's default pre-scales it), since the harness standardises itself.
    """

    def __init__(self, name: str, seed: int | None = None) -> None:
        if name not in _BUNDLED:
            raise DatasetError(
                f"Unknown bundled dataset '{name}'. Bundled datasets are: {', '.join(_BUNDLED)}."
            )
        self.name = name
        self.seed: int | None = check_seed(seed)
        self._spec = _BUNDLED[name]
        self._cache: tuple[np.ndarray, np.ndarray, list[str], list[Any] | None] | None = None

    @property
    def task(self) -> Task:
        return self._spec.task

    @property
    def n_samples(self) -> int:
        return self._spec.n_samples

    @property
    def n_features(self) -> int:
        return self._spec.n_features

    @property
    def n_classes(self) -> int | None:
        return self._spec.n_classes

    def _load(self) -> tuple[np.ndarray, np.ndarray, list[str], list[Any] | None]:
        if self._cache is None:
            try:
                from sklearn import datasets as sk_datasets
            except ImportError as exc:  # pragma: no cover - scikit-learn is a dependency
                raise DatasetError(
                    f"Dataset '{self.name}' is loaded from scikit-learn, which is not "
                    "installed. Install it with `pip install scikit-learn`."
                ) from exc
            kwargs: dict[str, Any] = {"scaled": False} if self.name == "diabetes" else {}
            bunch = getattr(sk_datasets, self._spec.loader)(**kwargs)
            X = np.ascontiguousarray(bunch.data, dtype=np.float64)
            dtype = np.float64 if self._spec.task == "regression" else np.int64
            y = np.ascontiguousarray(bunch.target, dtype=dtype)
            features = [str(f) for f in bunch.feature_names]
            names = getattr(bunch, "target_names", None)
            classes = None if self._spec.task == "regression" or names is None else names.tolist()
            self._cache = (X, y, features, classes)
        return self._cache

    def generate(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        X, y, _, _ = self._load()
        # Copies: a caller that scales X in place must not change the next call's data.
        return X.copy(), y.copy()

    def _parameters(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def _details(self) -> dict[str, Any]:
        _, _, features, classes = self._load()
        return {
            "source": "scikit-learn bundled dataset (no download)",
            "feature_names": features,
            "classes": classes,
        }
