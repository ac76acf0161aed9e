"""The dataset protocol across every dataset, bundled and CSV data, the factory, splits, scaling."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlharness.datasets import (
    SUPPORTED_DATASETS,
    BaseDataset,
    BundledDataset,
    CSVDataset,
    SyntheticClassificationDataset,
    SyntheticRegressionDataset,
    make_dataset,
)
from mlharness.errors import DatasetError
from mlharness.tabular.preprocessing import Standardizer, train_val_split

SUPPORTED_LIST = (
    "synthetic_regression, synthetic_classification, iris, wine, breast_cancer, digits, "
    "diabetes, csv"
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def numeric_csv(tmp_path: Path) -> Path:
    return _write(tmp_path / "data.csv", "a,b,c,price\n1,2,3,10.5\n4,5,6,20.25\n7,8,9,30.0\n")


def _all_datasets(tmp_path: Path) -> list[BaseDataset]:
    csv_path = _write(tmp_path / "all.csv", "x1,x2,label\n0.5,1,cat\n1.5,2,dog\n2.5,3,cat\n")
    return [
        SyntheticRegressionDataset(n_samples=20, n_features=3, seed=0),
        SyntheticClassificationDataset(n_samples=20, n_features=3, n_classes=3, seed=0),
        *(BundledDataset(name) for name in ("iris", "wine", "breast_cancer", "digits")),
        BundledDataset("diabetes"),
        CSVDataset(csv_path, target="label"),
    ]


# --------------------------------------------------------------------------- protocol


def test_every_dataset_honours_the_base_contract(tmp_path: Path) -> None:
    for dataset in _all_datasets(tmp_path):
        assert isinstance(dataset, BaseDataset)
        X, y = dataset.generate(seed=0)
        assert X.dtype == np.float64 and X.ndim == 2
        assert X.shape == (dataset.n_samples, dataset.n_features)
        assert y.shape == (dataset.n_samples,)
        if dataset.task == "regression":
            assert dataset.n_classes is None
            assert y.dtype == np.float64
        else:
            assert dataset.task == "classification"
            assert y.dtype == np.int64
            assert dataset.n_classes is not None
            assert set(np.unique(y).tolist()) == set(range(dataset.n_classes))
        meta = dataset.get_metadata()
        for key in ("name", "task", "n_samples", "n_features", "n_classes", "parameters"):
            assert key in meta, (dataset.name, key)
        assert meta["name"] == dataset.name
        assert meta["task"] == dataset.task
        assert meta["n_samples"] == dataset.n_samples
        json.dumps(meta)  # JSON-serialisable as-is


def test_base_dataset_is_abstract() -> None:
    with pytest.raises(TypeError):
        BaseDataset()


def test_synthetic_metadata_fields() -> None:
    meta = SyntheticRegressionDataset(
        n_samples=7, n_features=2, noise_std=0.3, seed=4
    ).get_metadata()
    assert meta["name"] == "synthetic_regression"
    assert meta["n_classes"] is None
    assert meta["parameters"] == {
        "n_samples": 7,
        "n_features": 2,
        "n_informative": 2,
        "noise_std": 0.3,
        "seed": 4,
    }
    assert len(meta["coefficients"]) == 2
    assert meta["intercept"] == 0.0


def test_importing_datasets_does_not_import_sklearn() -> None:
    code = "import sys, mlharness.datasets; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- bundled


@pytest.mark.parametrize(
    ("name", "shape", "task", "n_classes"),
    [
        ("iris", (150, 4), "classification", 3),
        ("wine", (178, 13), "classification", 3),
        ("breast_cancer", (569, 30), "classification", 2),
        ("digits", (1797, 64), "classification", 10),
        ("diabetes", (442, 10), "regression", None),
    ],
)
def test_bundled_datasets(
    name: str, shape: tuple[int, int], task: str, n_classes: int | None
) -> None:
    dataset = make_dataset(name, {})
    assert isinstance(dataset, BundledDataset)
    X, _ = dataset.generate()
    assert X.shape == shape and X.dtype == np.float64
    assert dataset.task == task and dataset.n_classes == n_classes
    meta = dataset.get_metadata()
    assert len(meta["feature_names"]) == shape[1]
    if n_classes is not None:
        assert len(meta["classes"]) == n_classes


def test_bundled_data_are_fixed_and_copied() -> None:
    dataset = BundledDataset("iris", seed=3)
    X1, _ = dataset.generate(seed=1)
    X1[:] = 0.0
    X2, _ = dataset.generate(seed=2)
    assert X2.any()
    assert dataset.get_metadata()["classes"] == ["setosa", "versicolor", "virginica"]


def test_bundled_unknown_name() -> None:
    with pytest.raises(DatasetError) as info:
        BundledDataset("titanic")
    assert str(info.value) == (
        "Unknown bundled dataset 'titanic'. Bundled datasets are: "
        "iris, wine, breast_cancer, digits, diabetes."
    )


# --------------------------------------------------------------------------- CSV


def test_csv_numeric_regression(numeric_csv: Path) -> None:
    dataset = CSVDataset(numeric_csv, target="price")
    X, y = dataset.generate()
    np.testing.assert_array_equal(X, [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    np.testing.assert_array_equal(y, [10.5, 20.25, 30.0])
    assert dataset.task == "regression" and dataset.n_classes is None
    assert dataset.get_metadata()["feature_names"] == ["a", "b", "c"]


def test_csv_feature_subset_and_order(numeric_csv: Path) -> None:
    dataset = CSVDataset(numeric_csv, target="price", features=["c", "a"])
    X, _ = dataset.generate()
    np.testing.assert_array_equal(X, [[3, 1], [6, 4], [9, 7]])
    assert dataset.n_features == 2


def test_csv_string_labels_are_encoded_in_sorted_order(tmp_path: Path) -> None:
    path = _write(tmp_path / "pets.csv", "w,h,kind\n1,2,dog\n3,4,cat\n5,6,bird\n7,8,cat\n\n")
    dataset = CSVDataset(path, target="kind")
    _, y = dataset.generate()
    assert dataset.task == "classification" and dataset.n_classes == 3
    assert dataset.get_metadata()["classes"] == ["bird", "cat", "dog"]
    np.testing.assert_array_equal(y, [2, 1, 0, 1])
    assert y.dtype == np.int64


def test_csv_integer_target_auto_is_classification(tmp_path: Path) -> None:
    path = _write(tmp_path / "int.csv", "x,y\n0.1,3\n0.2,1\n0.3,3\n0.4,7\n")
    dataset = CSVDataset(path, target="y")
    _, y = dataset.generate()
    assert dataset.task == "classification"
    assert dataset.get_metadata()["classes"] == [1, 3, 7]
    np.testing.assert_array_equal(y, [1, 0, 1, 2])
    # The same column can be read as a regression target on request.
    regression = CSVDataset(path, target="y", task="regression")
    assert regression.task == "regression"
    np.testing.assert_array_equal(regression.generate()[1], [3.0, 1.0, 3.0, 7.0])


def test_csv_many_integer_values_auto_is_regression(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i * 3}\n" for i in range(25))
    dataset = CSVDataset(_write(tmp_path / "many.csv", "x,y\n" + rows), target="y")
    assert dataset.task == "regression"


def test_csv_semicolon_delimiter_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_bytes("\ufeffx;y\n1;2.5\n3;4.5\n".encode())
    X, y = CSVDataset(path, target="y", delimiter=";").generate()
    np.testing.assert_array_equal(X, [[1], [3]])
    np.testing.assert_array_equal(y, [2.5, 4.5])


def test_csv_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(DatasetError) as info:
        CSVDataset(missing, target="y")
    assert str(info.value) == (
        f"CSV file not found: {missing}. Check dataset.path in the config: it must "
        "point to an existing CSV file with a header row."
    )


def test_csv_missing_target_lists_available_columns(numeric_csv: Path) -> None:
    with pytest.raises(DatasetError) as info:
        CSVDataset(numeric_csv, target="cost").generate()
    assert str(info.value) == (
        f"Column 'cost' not found in CSV file {numeric_csv}. Available columns: a, b, c, price. "
        "Set dataset.params.target (and dataset.params.features) to names from the header."
    )


def test_csv_missing_feature_lists_available_columns(numeric_csv: Path) -> None:
    with pytest.raises(
        DatasetError, match=r"Column 'z', 'q' not found .* Available columns: a, b, c, price\."
    ):
        CSVDataset(numeric_csv, target="price", features=["a", "z", "q"]).generate()


def test_csv_non_numeric_feature_names_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.csv", "a,b,y\n1,2,3\n4,oops,6\n")
    with pytest.raises(DatasetError) as info:
        CSVDataset(path, target="y").generate()
    assert str(info.value) == (
        f"Non-numeric value 'oops' in CSV file {path}, line 3, column 'b'. Feature values "
        "must be finite numbers: fix the value or leave the column out of "
        "dataset.params.features."
    )


def test_csv_missing_and_non_finite_values(tmp_path: Path) -> None:
    path = _write(tmp_path / "gap.csv", "a,b,y\n1,2,3\n4,,6\n")
    with pytest.raises(DatasetError, match=r"^Missing value in CSV file .*, line 3, column 'b'\."):
        CSVDataset(path, target="y").generate()
    path = _write(tmp_path / "inf.csv", "a,b,y\n1,inf,3\n4,5,6\n")
    with pytest.raises(DatasetError, match=r"^Non-finite value 'inf' in CSV file .*, line 2"):
        CSVDataset(path, target="y").generate()


def test_csv_ragged_row(tmp_path: Path) -> None:
    path = _write(tmp_path / "ragged.csv", "a,b,y\n1,2,3\n4,5\n")
    with pytest.raises(DatasetError) as info:
        CSVDataset(path, target="y").generate()
    assert str(info.value) == (
        f"Line 3 of CSV file {path} has 2 fields, but the header has 3 columns. Fix the row "
        "or check dataset.params.delimiter (',')."
    )


def test_csv_empty_and_header_only(tmp_path: Path) -> None:
    empty = _write(tmp_path / "empty.csv", "")
    with pytest.raises(DatasetError, match=r"^CSV file .* is empty; it needs a header row"):
        CSVDataset(empty, target="y").generate()
    header = _write(tmp_path / "header.csv", "a,y\n")
    with pytest.raises(
        DatasetError, match=r"has a header but no data rows; add rows to train on\.$"
    ):
        CSVDataset(header, target="y").generate()


def test_csv_target_errors(tmp_path: Path) -> None:
    text_target = _write(tmp_path / "t.csv", "a,y\n1,x\n2,y\n")
    with pytest.raises(DatasetError, match=r"^Non-numeric target value 'x' in CSV file .*, line 2"):
        CSVDataset(text_target, target="y", task="regression").generate()
    single = _write(tmp_path / "s.csv", "a,y\n1,5\n2,5\n")
    with pytest.raises(DatasetError, match=r"holds a single value \(5\); classification needs"):
        CSVDataset(single, target="y").generate()
    names = "".join(f"{i},name{i}\n" for i in range(21))
    many = _write(tmp_path / "m.csv", "a,y\n" + names)
    with pytest.raises(
        DatasetError, match=r"holds 21 distinct non-numeric values, more than the 20"
    ):
        CSVDataset(many, target="y").generate()
    assert CSVDataset(many, target="y", task="classification").n_classes == 21


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"task": "clustering"},
            "task must be 'auto', 'regression' or 'classification', got 'clustering'.",
        ),
        ({"delimiter": ";;"}, "delimiter must be a single character, got ';;'."),
        (
            {"features": ["a", "price"]},
            "The target column 'price' is also listed in features; remove it from "
            "dataset.params.features.",
        ),
        ({"features": ["a", "a"]}, "features lists columns more than once: ['a']."),
        (
            {"features": []},
            "features must name at least one column; omit it to use every column except the "
            "target.",
        ),
    ],
)
def test_csv_invalid_parameters(numeric_csv: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DatasetError, match=f"^{re.escape(message)}$"):
        CSVDataset(numeric_csv, target="price", **kwargs)


# --------------------------------------------------------------------------- make_dataset


def test_supported_datasets() -> None:
    assert ", ".join(SUPPORTED_DATASETS) == SUPPORTED_LIST


def test_make_dataset_builds_each_kind(numeric_csv: Path) -> None:
    regression = make_dataset("synthetic_regression", {"n_samples": 5, "seed": 1})
    assert isinstance(regression, SyntheticRegressionDataset) and regression.n_samples == 5
    classification = make_dataset("synthetic_classification", {"n_classes": 3})
    assert isinstance(classification, SyntheticClassificationDataset)
    assert classification.n_classes == 3
    csv_dataset = make_dataset("csv", {"path": str(numeric_csv), "target": "price"})
    assert isinstance(csv_dataset, CSVDataset) and csv_dataset.n_features == 3
    assert make_dataset("wine", {"seed": 0}).n_features == 13


def test_make_dataset_unknown_name() -> None:
    with pytest.raises(DatasetError) as info:
        make_dataset("my_dataset", {})
    assert str(info.value) == f"Unknown dataset 'my_dataset'. Currently supported: {SUPPORTED_LIST}"
    with pytest.raises(DatasetError) as info:
        make_dataset("irs", {})
    assert str(info.value).endswith("\nDid you mean 'iris'?")


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100", "imagenet"])
def test_make_dataset_not_yet_supported(name: str) -> None:
    with pytest.raises(DatasetError) as info:
        make_dataset(name, {})
    assert str(info.value) == (
        f"Dataset '{name}' is not yet supported.\nCurrently supported: {SUPPORTED_LIST}"
    )


def test_make_dataset_unknown_parameter() -> None:
    with pytest.raises(DatasetError) as info:
        make_dataset("synthetic_regression", {"n_sample": 5})
    assert str(info.value) == (
        "Unknown parameter(s) for dataset 'synthetic_regression': n_sample. Accepted "
        "dataset.params: n_samples, n_features, n_informative, noise_std, seed. "
        "Did you mean 'n_sample' -> 'n_samples'?"
    )
    with pytest.raises(
        DatasetError, match=r"^Unknown parameter\(s\) for dataset 'iris': n_samples\."
    ):
        make_dataset("iris", {"n_samples": 5})


def test_make_dataset_csv_requires_path_and_target(numeric_csv: Path) -> None:
    with pytest.raises(DatasetError) as info:
        make_dataset("csv", {"target": "y"})
    assert str(info.value) == (
        "Dataset 'csv' needs dataset.params.path: the path of the CSV file to read."
    )
    with pytest.raises(DatasetError) as info:
        make_dataset("csv", {"path": str(numeric_csv)})
    assert str(info.value) == (
        "Dataset 'csv' needs dataset.params.target: the name of the target column in the CSV "
        "header."
    )


# --------------------------------------------------------------------------- splitting


def _labels(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts).astype(np.int64)


def test_split_sizes_and_disjointness() -> None:
    X = np.arange(100, dtype=np.float64).reshape(50, 2)
    y = np.arange(50, dtype=np.float64)
    X_tr, X_val, y_tr, y_val = train_val_split(X, y, 0.2, seed=0, stratify=False)
    assert X_tr.shape == (40, 2) and X_val.shape == (10, 2)
    assert y_tr.shape == (40,) and y_val.shape == (10,)
    assert sorted(np.concatenate([y_tr, y_val]).tolist()) == y.tolist()
    np.testing.assert_array_equal(X_tr[:, 0] / 2, y_tr)  # rows stay paired


def test_split_is_deterministic() -> None:
    X = np.random.default_rng(0).normal(size=(60, 3))
    y = _labels([20, 20, 20])
    first = train_val_split(X, y, 0.25, seed=5, stratify=True)
    again = train_val_split(X, y, 0.25, seed=5, stratify=True)
    other = train_val_split(X, y, 0.25, seed=6, stratify=True)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[3], other[3]) or not np.array_equal(first[1], other[1])


def test_stratified_split_keeps_class_proportions() -> None:
    y = _labels([80, 15, 5])
    X = np.zeros((100, 1))
    _, _, y_tr, y_val = train_val_split(X, y, 0.2, seed=1, stratify=True)
    assert np.bincount(y_val, minlength=3).tolist() == [16, 3, 1]
    assert np.bincount(y_tr, minlength=3).tolist() == [64, 12, 4]


def test_stratified_split_keeps_a_training_sample_per_class() -> None:
    y = _labels([1, 1, 10])
    X = np.zeros((12, 1))
    _, _, y_tr, y_val = train_val_split(X, y, 0.5, seed=0, stratify=True)
    assert set(y_tr.tolist()) == {0, 1, 2}
    assert len(y_val) == 6 and set(y_val.tolist()) == {2}


def test_zero_fraction_gives_empty_validation() -> None:
    X = np.ones((10, 3))
    y = np.arange(10)
    X_tr, X_val, _, y_val = train_val_split(X, y, 0.0, seed=0, stratify=True)
    assert X_tr.shape == (10, 3) and X_val.shape == (0, 3) and y_val.shape == (0,)


def test_small_fraction_still_validates_and_trains() -> None:
    X = np.ones((2, 1))
    y = np.array([0.0, 1.0])
    X_tr, X_val, _, _ = train_val_split(X, y, 0.01, seed=0, stratify=False)
    assert len(X_tr) == 1 and len(X_val) == 1
    X_tr, X_val, _, _ = train_val_split(np.ones((1, 1)), y[:1], 0.5, seed=0, stratify=False)
    assert len(X_tr) == 1 and len(X_val) == 0


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5])
def test_split_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(DatasetError) as info:
        train_val_split(np.ones((4, 1)), np.arange(4), fraction, seed=0, stratify=False)
    assert str(info.value) == (
        f"validation_fraction must be a number at least 0 and less than 1, got {fraction!r}."
    )


def test_split_errors() -> None:
    with pytest.raises(DatasetError, match=r"^X has 4 rows but y has 3 values"):
        train_val_split(np.ones((4, 1)), np.arange(3), 0.2, seed=0, stratify=False)
    with pytest.raises(DatasetError, match=r"^Stratified splitting needs integer class labels"):
        train_val_split(np.ones((4, 1)), np.ones(4), 0.5, seed=0, stratify=True)


# --------------------------------------------------------------------------- scaling


def test_standardizer_roundtrip_through_dict() -> None:
    X = np.random.default_rng(0).normal(3.0, 2.0, size=(200, 4))
    scaler = Standardizer().fit(X)
    Z = scaler.transform(X)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z.std(axis=0), 1.0, atol=1e-12)
    state = json.loads(json.dumps(scaler.to_dict()))
    restored = Standardizer.from_dict(state)
    np.testing.assert_array_equal(restored.transform(X), Z)
    np.testing.assert_allclose(restored.inverse_transform(Z), X, atol=1e-12)


def test_standardizer_constant_column() -> None:
    X = np.array([[0.1, 1.0], [0.1, 2.0], [0.1, 3.0]])
    scaler = Standardizer().fit(X)
    assert scaler.std_ is not None and scaler.std_[0] == 1.0
    Z = scaler.transform(X)
    assert np.isfinite(Z).all()
    np.testing.assert_allclose(Z[:, 0], 0.0, atol=1e-15)


def test_standardizer_errors() -> None:
    with pytest.raises(DatasetError) as info:
        Standardizer().transform(np.ones((2, 2)))
    assert str(info.value) == (
        "Standardizer is not fitted: call fit(X) before transform(X), or restore it with "
        "Standardizer.from_dict(...)."
    )
    scaler = Standardizer().fit(np.ones((3, 2)))
    with pytest.raises(
        DatasetError, match=r"^Standardizer was fitted on 2 features, but transform got 3"
    ):
        scaler.transform(np.ones((3, 3)))
    with pytest.raises(
        DatasetError, match=r"^Standardizer state must be a mapping with 'mean' and 'std'"
    ):
        Standardizer.from_dict({"mean": [0.0]})
    with pytest.raises(DatasetError, match=r"^Standardizer state is inconsistent"):
        Standardizer.from_dict({"mean": [0.0, 1.0], "std": [1.0]})
