"""Datasets for the tabular engine: synthetic generators, scikit-learn's bundled sets, CSV files.

Every dataset returns plain NumPy arrays from ``generate(seed)``: ``X`` as float64 of shape
``(n_samples, n_features)`` and ``y`` as float64 targets (regression) or int64 labels
``0..k-1`` (classification). Runs are reproducible because synthetic data are a pure function
of their parameters and the seed (``np.random.default_rng``), and fixed data sets ignore it.

Constructors check their parameters so that a bad config fails before any work starts
(``mlx train --dry-run`` builds the dataset and stops). scikit-learn is imported only when a
bundled dataset is loaded, so importing this module stays cheap for ``mlx --help``.
"""

from __future__ import annotations

import csv
import difflib
import inspect
import math
import numbers
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

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

MAX_AUTO_CLASSES = 20
"""With ``task="auto"``, a CSV target with more distinct values than this is not a label."""


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


def _seed(value: object, name: str = "seed") -> int | None:
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
        self.seed: int | None = _seed(seed)
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
        resolved = _seed(seed) if seed is not None else self.seed
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
        resolved = _seed(seed) if seed is not None else self.seed
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
        resolved = _seed(seed) if seed is not None else self.seed
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
        self.seed: int | None = _seed(seed)
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


# --------------------------------------------------------------------------- CSV files


@dataclass(frozen=True)
class _CSVData:
    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    task: Task
    classes: list[Any] | None


_TASKS = ("auto", "regression", "classification")


class CSVDataset(BaseDataset):
    """Numeric features and a target column from a CSV file with a header row.

    ``task="auto"`` treats the target as class labels when it holds integers or strings
    with at most 20 distinct values, and as a regression target otherwise. Labels are
    encoded as positions in their sorted order (numeric order for numbers), and the
    original values are kept as ``classes`` in the metadata so predictions can be named.
    The file is read once, on first use; its rows are fixed, so ``seed`` is ignored.
    """

    name = "csv"

    def __init__(
        self,
        path: str | os.PathLike[str],
        target: str,
        features: Sequence[str] | None = None,
        task: str = "auto",
        delimiter: str = ",",
        seed: int | None = None,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise DatasetError(
                f"path must be the path of a CSV file, got {path!r}. Set dataset.path."
            )
        self.path = Path(path)
        if not isinstance(target, str) or not target.strip():
            raise DatasetError(
                f"target must be the name of the target column, got {target!r}. "
                "Set dataset.params.target to a column name from the CSV header."
            )
        self.target = target.strip()
        if features is not None:
            if isinstance(features, str) or not all(isinstance(f, str) for f in features):
                raise DatasetError(
                    f"features must be a list of column names, got {features!r}. "
                    "Omit it to use every column except the target."
                )
            features = [f.strip() for f in features]
            if not features:
                raise DatasetError(
                    "features must name at least one column; omit it to use every column "
                    "except the target."
                )
            duplicates = sorted({f for f in features if features.count(f) > 1})
            if duplicates:
                raise DatasetError(f"features lists columns more than once: {duplicates}.")
            if self.target in features:
                raise DatasetError(
                    f"The target column '{self.target}' is also listed in features; "
                    "remove it from dataset.params.features."
                )
        self.features: list[str] | None = None if features is None else list(features)
        if task not in _TASKS:
            raise DatasetError(
                f"task must be 'auto', 'regression' or 'classification', got {task!r}."
            )
        self.requested_task = task
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            raise DatasetError(f"delimiter must be a single character, got {delimiter!r}.")
        self.delimiter = delimiter
        self.seed: int | None = _seed(seed)
        self._data: _CSVData | None = None
        if not self.path.is_file():
            raise self._not_found()

    def _not_found(self) -> DatasetError:
        return DatasetError(
            f"CSV file not found: {self.path}. Check dataset.path in the config: it "
            "must point to an existing CSV file with a header row."
        )

    @property
    def task(self) -> Task:
        return self._load().task

    @property
    def n_samples(self) -> int:
        return int(self._load().X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self._load().X.shape[1])

    @property
    def n_classes(self) -> int | None:
        classes = self._load().classes
        return None if classes is None else len(classes)

    def generate(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        data = self._load()
        return data.X.copy(), data.y.copy()

    def _parameters(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "target": self.target,
            "features": self.features,
            "task": self.requested_task,
            "delimiter": self.delimiter,
            "seed": self.seed,
        }

    def _details(self) -> dict[str, Any]:
        data = self._load()
        return {"feature_names": data.feature_names, "classes": data.classes}

    # ---- reading

    def _load(self) -> _CSVData:
        if self._data is None:
            self._data = self._read()
        return self._data

    def _read_rows(self) -> tuple[list[str], list[list[str]], list[int]]:
        if not self.path.is_file():
            raise self._not_found()
        rows: list[list[str]] = []
        lines: list[int] = []
        try:
            with self.path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.reader(fh, delimiter=self.delimiter)
                header = next(reader, None)
                if header is None or not any(h.strip() for h in header):
                    raise DatasetError(
                        f"CSV file {self.path} is empty; it needs a header row of column "
                        "names followed by data rows."
                    )
                header = [h.strip() for h in header]
                for row in reader:
                    if not any(cell.strip() for cell in row):
                        continue  # blank lines, common at the end of files
                    if len(row) != len(header):
                        raise DatasetError(
                            f"Line {reader.line_num} of CSV file {self.path} has {len(row)} "
                            f"fields, but the header has {len(header)} columns. Fix the row "
                            f"or check dataset.params.delimiter ({self.delimiter!r})."
                        )
                    rows.append(row)
                    lines.append(reader.line_num)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DatasetError(f"Cannot read CSV file {self.path}: {exc}.") from exc
        return header, rows, lines

    def _read(self) -> _CSVData:
        header, rows, lines = self._read_rows()
        duplicates = sorted({h for h in header if header.count(h) > 1})
        if duplicates:
            raise DatasetError(
                f"CSV file {self.path} has duplicate column names {duplicates}; "
                "rename them so every column can be selected."
            )
        if not rows:
            raise DatasetError(
                f"CSV file {self.path} has a header but no data rows; add rows to train on."
            )
        feature_names = self.features or [h for h in header if h != self.target]
        missing = [c for c in [self.target, *feature_names] if c not in header]
        if missing:
            quoted = ", ".join(f"'{c}'" for c in missing)
            raise DatasetError(
                f"Column {quoted} not found in CSV file {self.path}. "
                f"Available columns: {', '.join(header)}. Set dataset.params.target "
                "(and dataset.params.features) to names from the header."
            )
        if not feature_names:
            raise DatasetError(
                f"CSV file {self.path} has no feature columns besides the target "
                f"'{self.target}'; add feature columns to the file."
            )
        columns = [header.index(c) for c in feature_names]
        X = self._parse_features(rows, lines, columns, feature_names)
        y, task, classes = self._parse_target(rows, lines, header.index(self.target))
        return _CSVData(X=X, y=y, feature_names=feature_names, task=task, classes=classes)

    def _cell_error(self, line: int, column: str, value: str, what: str) -> DatasetError:
        if not value.strip():
            return DatasetError(
                f"Missing value in CSV file {self.path}, line {line}, column '{column}'. "
                "Fill in or remove rows with missing values."
            )
        return DatasetError(
            f"{what} value {value.strip()!r} in CSV file {self.path}, line {line}, column "
            f"'{column}'. Feature values must be finite numbers: fix the value or leave the "
            "column out of dataset.params.features."
        )

    def _parse_features(
        self, rows: list[list[str]], lines: list[int], columns: list[int], names: list[str]
    ) -> np.ndarray:
        cells = [[row[j] for j in columns] for row in rows]
        try:
            X = np.array(cells, dtype=np.float64)
            if np.isfinite(X).all():
                return X
        except ValueError:
            pass
        # Slow path, only on failure: find the first bad cell to name its line and column.
        X = np.empty((len(rows), len(columns)), dtype=np.float64)
        for i, row in enumerate(cells):
            for j, text in enumerate(row):
                try:
                    value = float(text)
                except ValueError:
                    raise self._cell_error(lines[i], names[j], text, "Non-numeric") from None
                if not math.isfinite(value):
                    raise self._cell_error(lines[i], names[j], text, "Non-finite")
                X[i, j] = value
        return X

    def _parse_target(
        self, rows: list[list[str]], lines: list[int], column: int
    ) -> tuple[np.ndarray, Task, list[Any] | None]:
        texts = [row[column].strip() for row in rows]
        for i, text in enumerate(texts):
            if not text:
                raise DatasetError(
                    f"Missing value in CSV file {self.path}, line {lines[i]}, column "
                    f"'{self.target}'. Every row needs a target value; fill it in or remove "
                    "the row."
                )
        values: list[float] = []
        bad: int | None = None  # first row whose target is not a finite number
        for i, text in enumerate(texts):
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                bad = i
                break
            values.append(value)

        task = self.requested_task
        if bad is None:
            distinct = sorted(set(values))
            if task == "auto":
                integral = all(v.is_integer() for v in distinct)
                task = (
                    "classification"
                    if integral and len(distinct) <= MAX_AUTO_CLASSES
                    else "regression"
                )
            if task == "regression":
                return np.array(values, dtype=np.float64), "regression", None
            classes: list[Any] = [int(v) if v.is_integer() else v for v in distinct]
            y = np.searchsorted(np.array(distinct), np.array(values)).astype(np.int64)
        else:
            distinct_text = sorted(set(texts))
            if task == "regression":
                raise DatasetError(
                    f"Non-numeric target value {texts[bad]!r} in CSV file {self.path}, line "
                    f"{lines[bad]}, column '{self.target}'. A regression target must hold "
                    "numbers; set dataset.params.task to 'classification' for class labels."
                )
            if task == "auto" and len(distinct_text) > MAX_AUTO_CLASSES:
                raise DatasetError(
                    f"Target column '{self.target}' in CSV file {self.path} holds "
                    f"{len(distinct_text)} distinct non-numeric values, more than the "
                    f"{MAX_AUTO_CLASSES} that task 'auto' treats as class labels. Set "
                    "dataset.params.task to 'classification' to use them as labels anyway."
                )
            classes = list(distinct_text)
            index = {label: k for k, label in enumerate(distinct_text)}
            y = np.array([index[t] for t in texts], dtype=np.int64)
        if len(classes) < 2:
            raise DatasetError(
                f"Target column '{self.target}' in CSV file {self.path} holds a single "
                f"value ({classes[0]!r}); classification needs at least two classes. Check "
                "the target column, or set dataset.params.task to 'regression'."
            )
        return y, "classification", classes


# --------------------------------------------------------------------------- factory


def _supported() -> str:
    return ", ".join(SUPPORTED_DATASETS)


def make_dataset(name: str, params: Mapping[str, Any]) -> BaseDataset:
    """Build the dataset a config names; ``params`` is its ``dataset.params`` mapping.

    Unknown parameters are errors here rather than being dropped: by this point the config
    layer has already reported unknown keys, so anything left is a real mismatch.
    """
    if name in PLANNED_DATASETS:
        raise DatasetError(
            f"Dataset '{name}' is not yet supported.\nCurrently supported: {_supported()}"
        )
    if name not in SUPPORTED_DATASETS:
        message = f"Unknown dataset '{name}'. Currently supported: {_supported()}"
        close = difflib.get_close_matches(str(name), SUPPORTED_DATASETS, n=1)
        if close:
            message += f"\nDid you mean '{close[0]}'?"
        raise DatasetError(message)

    factory: type[BaseDataset]
    if name == "synthetic_regression":
        factory = SyntheticRegressionDataset
    elif name == "synthetic_classification":
        factory = SyntheticClassificationDataset
    elif name == "csv":
        factory = CSVDataset
    else:
        factory = BundledDataset
    accepted = [p for p in inspect.signature(factory.__init__).parameters if p != "self"]
    if factory is BundledDataset:
        accepted.remove("name")
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        hints = [
            f"'{key}' -> '{match[0]}'"
            for key in unknown
            if (match := difflib.get_close_matches(str(key), accepted, n=1))
        ]
        raise DatasetError(
            f"Unknown parameter(s) for dataset '{name}': {', '.join(map(str, unknown))}. "
            f"Accepted dataset.params: {', '.join(accepted)}."
            + (f" Did you mean {', '.join(hints)}?" if hints else "")
        )
    if factory is CSVDataset:
        for required in ("path", "target"):
            if params.get(required) is None:
                raise DatasetError(
                    f"Dataset 'csv' needs dataset.params.{required}: "
                    + (
                        "the path of the CSV file to read."
                        if required == "path"
                        else "the name of the target column in the CSV header."
                    )
                )
    if factory is BundledDataset:
        return BundledDataset(name, **params)
    return cast(BaseDataset, factory(**params))


# --------------------------------------------------------------------------- splitting


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
    rng = np.random.default_rng(_seed(seed, "split seed"))

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
