"""CSV files as a tabular dataset: a header row, numeric features, a numeric or text target.

The file is read once, on first use, with the standard library's ``csv`` module (no pandas);
every bad cell is reported with its file, line and column so the fix is one edit away.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlharness.errors import DatasetError
from mlharness.tabular.datasets import BaseDataset, Task, check_seed

MAX_AUTO_CLASSES = 20
"""With ``task="auto"``, a CSV target with more distinct values than this is not a label."""


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
        self.seed: int | None = check_seed(seed)
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
        values, bad = _leading_numbers(texts)
        task = self.requested_task
        if bad is None:
            distinct = sorted(set(values))
            if task == "auto":
                integral = all(v.is_integer() for v in distinct)
                few = len(distinct) <= MAX_AUTO_CLASSES
                task = "classification" if integral and few else "regression"
            if task == "regression":
                return np.array(values, dtype=np.float64), "regression", None
            classes: list[Any] = [int(v) if v.is_integer() else v for v in distinct]
            y = np.searchsorted(np.array(distinct), np.array(values)).astype(np.int64)
        else:
            classes, y = self._text_classes(texts, lines, bad, task)
        if len(classes) < 2:
            raise DatasetError(
                f"Target column '{self.target}' in CSV file {self.path} holds a single "
                f"value ({classes[0]!r}); classification needs at least two classes. Check "
                "the target column, or set dataset.params.task to 'regression'."
            )
        return y, "classification", classes

    def _text_classes(
        self, texts: list[str], lines: list[int], bad: int, task: str
    ) -> tuple[list[Any], np.ndarray]:
        """Class labels and indices of a target that is not all numbers (row ``bad`` is not)."""
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
        index = {label: k for k, label in enumerate(distinct_text)}
        return list(distinct_text), np.array([index[t] for t in texts], dtype=np.int64)


def _leading_numbers(texts: list[str]) -> tuple[list[float], int | None]:
    """The texts as finite numbers up to the first that is not one, and that row (or None)."""
    values: list[float] = []
    for i, text in enumerate(texts):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            return values, i
        values.append(value)
    return values, None
