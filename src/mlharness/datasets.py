"""Public dataset API: ``from mlharness.datasets import SyntheticRegressionDataset``.

The implementations live in :mod:`mlharness.tabular.datasets` and
:mod:`mlharness.tabular.csv_dataset`, built by name in :mod:`mlharness.tabular.factory`;
this module keeps the short import path the documentation uses.
"""

from __future__ import annotations

from mlharness.tabular.csv_dataset import CSVDataset
from mlharness.tabular.datasets import (
    SUPPORTED_DATASETS,
    BaseDataset,
    BundledDataset,
    SyntheticClassificationDataset,
    SyntheticRegressionDataset,
)
from mlharness.tabular.factory import make_dataset

__all__ = [
    "SUPPORTED_DATASETS",
    "BaseDataset",
    "BundledDataset",
    "CSVDataset",
    "SyntheticClassificationDataset",
    "SyntheticRegressionDataset",
    "make_dataset",
]
