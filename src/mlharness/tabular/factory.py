"""Build the dataset or model a name stands for: a config's ``dataset.name``, a checkpoint's
``model.json``.

The factories sit above the classes they choose between, so ``datasets`` need not import
``csv_dataset`` (which builds on it) and ``base`` need not import ``linear`` and ``mlp``
(which build on it).
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Mapping
from typing import Any

from mlharness.errors import CheckpointError, DatasetError
from mlharness.tabular.base import BaseModel, read_model_json
from mlharness.tabular.csv_dataset import CSVDataset
from mlharness.tabular.datasets import (
    PLANNED_DATASETS,
    SUPPORTED_DATASETS,
    BaseDataset,
    BundledDataset,
    SyntheticClassificationDataset,
    SyntheticRegressionDataset,
)
from mlharness.tabular.linear import LinearRegression
from mlharness.tabular.mlp import MLP

# --------------------------------------------------------------------------- datasets


def _supported() -> str:
    return ", ".join(SUPPORTED_DATASETS)


def _dataset_class(name: str) -> type[BaseDataset]:
    """The class of a supported name; planned and unknown names are errors with a hint."""
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
    classes: dict[str, type[BaseDataset]] = {
        "synthetic_regression": SyntheticRegressionDataset,
        "synthetic_classification": SyntheticClassificationDataset,
        "csv": CSVDataset,
    }
    return classes.get(name, BundledDataset)


def _check_params(name: str, factory: type[BaseDataset], params: Mapping[str, Any]) -> None:
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


def make_dataset(name: str, params: Mapping[str, Any]) -> BaseDataset:
    """Build the dataset a config names; ``params`` is its ``dataset.params`` mapping.

    Unknown parameters are errors here rather than being dropped: by this point the config
    layer has already reported unknown keys, so anything left is a real mismatch.
    """
    factory = _dataset_class(name)
    _check_params(name, factory, params)
    if factory is BundledDataset:
        return BundledDataset(name, **params)
    return factory(**params)


# --------------------------------------------------------------------------- models


def load_model(path: str | os.PathLike[str]) -> BaseModel:
    """Rebuild whichever model a checkpoint holds, with its weights and optimizer state."""
    models: dict[str, type[LinearRegression] | type[MLP]] = {
        "linear_regression": LinearRegression,
        "mlp": MLP,
    }
    meta = read_model_json(path)
    cls = models.get(meta["model"])
    if cls is None:
        raise CheckpointError(
            f"Checkpoint '{path}' holds an unknown model '{meta['model']}'. Supported models: "
            f"{', '.join(sorted(models))}."
        )
    try:
        model = cls(**meta["hyperparameters"], optimizer_config=meta.get("optimizer_config"))
    except TypeError as exc:
        raise CheckpointError(
            f"The hyperparameters in checkpoint '{path}' do not fit a {cls.__name__} ({exc}). "
            "Save the checkpoint again with this version of mlharness."
        ) from None
    model.load(path)
    return model
