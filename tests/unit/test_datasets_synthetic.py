"""Synthetic generators: determinism, the structure they promise, and parameter errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mlharness.datasets import SyntheticClassificationDataset, SyntheticRegressionDataset
from mlharness.errors import DatasetError


class TestSyntheticRegressionDataset:
    def test_deterministic_generation(self) -> None:
        dataset = SyntheticRegressionDataset(n_samples=100, n_features=5)
        X1, y1 = dataset.generate(seed=42)
        X2, y2 = dataset.generate(seed=42)
        np.testing.assert_array_equal(X1, X2)
        np.testing.assert_array_equal(y1, y2)
        # A second instance with the same parameters gives the same data too.
        X3, y3 = SyntheticRegressionDataset(n_samples=100, n_features=5, seed=42).generate()
        np.testing.assert_array_equal(X1, X3)
        np.testing.assert_array_equal(y1, y3)

    def test_different_seeds_produce_different_data(self) -> None:
        dataset = SyntheticRegressionDataset(n_samples=100, n_features=5)
        X1, y1 = dataset.generate(seed=42)
        X2, y2 = dataset.generate(seed=123)
        assert not np.array_equal(X1, X2)
        assert not np.array_equal(y1, y2)

    def test_memory_limit(self) -> None:
        with pytest.raises(DatasetError) as info:
            SyntheticRegressionDataset(n_samples=10_000_000, n_features=1000)
        message = str(info.value)
        assert message.startswith("Dataset size exceeds 1GB limit")
        assert "80,000,000,000 bytes" in message
        assert "Reduce n_samples or n_features" in message
        assert isinstance(info.value, ValueError)

    def test_memory_limit_boundary(self) -> None:
        # Exactly 1 GiB is allowed; one more row is not. Construction allocates nothing.
        SyntheticRegressionDataset(n_samples=1024**3 // 8, n_features=1)
        with pytest.raises(DatasetError, match=r"^Dataset size exceeds 1GB limit"):
            SyntheticRegressionDataset(n_samples=1024**3 // 8 + 1, n_features=1)

    def test_shapes_and_dtypes(self) -> None:
        X, y = SyntheticRegressionDataset(n_samples=30, n_features=4, seed=0).generate()
        assert X.shape == (30, 4) and y.shape == (30,)
        assert X.dtype == np.float64 and y.dtype == np.float64

    def test_call_seed_overrides_constructor_seed(self) -> None:
        dataset = SyntheticRegressionDataset(n_samples=20, seed=1)
        X_default, _ = dataset.generate()
        X_call, _ = dataset.generate(seed=2)
        X_two, _ = SyntheticRegressionDataset(n_samples=20).generate(seed=2)
        assert not np.array_equal(X_default, X_call)
        np.testing.assert_array_equal(X_call, X_two)

    def test_noise_free_data_is_exactly_linear(self) -> None:
        dataset = SyntheticRegressionDataset(n_samples=50, n_features=6, noise_std=0.0, seed=7)
        X, y = dataset.generate()
        np.testing.assert_array_equal(y, X @ dataset.coefficients())

    def test_noise_has_requested_std(self) -> None:
        dataset = SyntheticRegressionDataset(n_samples=20_000, n_features=3, noise_std=0.5)
        X, y = dataset.generate(seed=3)
        residual = y - X @ dataset.coefficients(seed=3)
        assert residual.std() == pytest.approx(0.5, rel=0.05)

    def test_non_informative_weights_are_zero(self) -> None:
        dataset = SyntheticRegressionDataset(n_features=8, n_informative=3, seed=5)
        weights = dataset.coefficients()
        assert np.all(weights[3:] == 0.0)
        assert np.all(np.abs(weights[:3]) >= 0.5)
        assert np.all(np.abs(weights[:3]) < 1.5)
        meta = dataset.get_metadata()
        assert meta["coefficients"] == weights.tolist()
        assert meta["informative_features"] == [0, 1, 2]

    def test_informative_defaults_to_all_features(self) -> None:
        weights = SyntheticRegressionDataset(n_features=6, seed=1).coefficients()
        assert np.all(weights != 0.0)

    def test_coefficients_do_not_depend_on_n_samples(self) -> None:
        small = SyntheticRegressionDataset(n_samples=10, seed=9).coefficients()
        large = SyntheticRegressionDataset(n_samples=500, seed=9).coefficients()
        np.testing.assert_array_equal(small, large)

    def test_metadata_follows_last_generated_seed(self) -> None:
        dataset = SyntheticRegressionDataset(n_features=3)
        assert dataset.get_metadata()["coefficients"] is None
        dataset.generate(seed=11)
        meta = dataset.get_metadata()
        assert meta["generator_seed"] == 11
        assert meta["coefficients"] == dataset.coefficients(seed=11).tolist()

    def test_seed_is_required(self) -> None:
        with pytest.raises(DatasetError) as info:
            SyntheticRegressionDataset().generate()
        assert str(info.value) == (
            "Cannot generate synthetic_regression data without a seed. A seed must be "
            "provided: pass generate(seed=...) or set params.seed (dataset.params.seed in "
            "the config)."
        )

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"n_samples": -5}, "n_samples must be a positive integer, got -5."),
            ({"n_samples": 0}, "n_samples must be a positive integer, got 0."),
            ({"n_samples": 10.5}, "n_samples must be a positive integer, got 10.5."),
            ({"n_samples": True}, "n_samples must be a positive integer, got True."),
            ({"n_features": 0}, "n_features must be a positive integer, got 0."),
            ({"n_features": "3"}, "n_features must be a positive integer, got '3'."),
            (
                {"n_features": 4, "n_informative": 5},
                "n_informative must be an integer between 1 and n_features (4), got 5.",
            ),
            (
                {"n_informative": 0},
                "n_informative must be an integer between 1 and n_features (10), got 0.",
            ),
            ({"noise_std": -0.1}, "noise_std must be a non-negative number, got -0.1."),
            ({"noise_std": float("nan")}, "noise_std must be a non-negative number, got nan."),
            ({"seed": -1}, "seed must be a non-negative integer or omitted, got -1."),
        ],
    )
    def test_invalid_parameters(self, kwargs: dict[str, object], message: str) -> None:
        with pytest.raises(DatasetError, match=f"^{re.escape(message)}$"):
            SyntheticRegressionDataset(**kwargs)

    def test_invalid_generate_seed(self) -> None:
        with pytest.raises(DatasetError, match=r"^seed must be a non-negative integer"):
            SyntheticRegressionDataset().generate(seed=-3)


def _nearest_centroid_accuracy(X: np.ndarray, y: np.ndarray) -> float:
    centroids = np.stack([X[y == c].mean(axis=0) for c in np.unique(y)])
    distances = ((X[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    return float((distances.argmin(axis=1) == y).mean())


class TestSyntheticClassificationDataset:
    def test_deterministic_generation(self) -> None:
        dataset = SyntheticClassificationDataset(n_samples=200, n_features=6, n_classes=3)
        X1, y1 = dataset.generate(seed=42)
        X2, y2 = dataset.generate(seed=42)
        np.testing.assert_array_equal(X1, X2)
        np.testing.assert_array_equal(y1, y2)

    def test_different_seeds_produce_different_data(self) -> None:
        dataset = SyntheticClassificationDataset(n_samples=200)
        X1, y1 = dataset.generate(seed=1)
        X2, y2 = dataset.generate(seed=2)
        assert not np.array_equal(X1, X2)
        assert not np.array_equal(y1, y2)

    def test_shapes_dtypes_and_labels(self) -> None:
        dataset = SyntheticClassificationDataset(n_samples=90, n_features=4, n_classes=4, seed=0)
        X, y = dataset.generate()
        assert X.shape == (90, 4) and X.dtype == np.float64
        assert y.shape == (90,) and y.dtype == np.int64
        assert set(y.tolist()) == {0, 1, 2, 3}
        assert dataset.n_classes == 4 and dataset.task == "classification"

    def test_balanced_classes(self) -> None:
        dataset = SyntheticClassificationDataset(n_samples=101, n_classes=3, seed=0)
        _, y = dataset.generate()
        assert np.bincount(y).tolist() == [34, 34, 33]
        assert dataset.get_metadata()["class_counts"] == [34, 34, 33]

    def test_rows_are_shuffled(self) -> None:
        _, y = SyntheticClassificationDataset(n_samples=100, seed=0).generate()
        assert not np.array_equal(y, np.sort(y))

    def test_larger_class_sep_is_more_separable(self) -> None:
        accuracies = []
        for sep in (0.25, 1.0, 3.0):
            dataset = SyntheticClassificationDataset(
                n_samples=600, n_features=5, n_informative=2, n_classes=3, class_sep=sep
            )
            accuracies.append(_nearest_centroid_accuracy(*dataset.generate(seed=4)))
        assert accuracies[0] < accuracies[1] < accuracies[2]
        assert accuracies[2] > 0.95

    @pytest.mark.parametrize(("n_informative", "n_classes"), [(1, 5), (2, 9), (3, 2), (40, 7)])
    def test_class_means_are_distinct_and_spaced(self, n_informative: int, n_classes: int) -> None:
        dataset = SyntheticClassificationDataset(
            n_samples=50,
            n_features=n_informative,
            n_informative=n_informative,
            n_classes=n_classes,
            class_sep=1.5,
            seed=8,
        )
        means = dataset.class_means()
        assert means.shape == (n_classes, n_informative)
        gaps = np.linalg.norm(means[:, None, :] - means[None, :, :], axis=2)
        gaps[np.diag_indices(n_classes)] = np.inf
        assert gaps.min() >= 2 * 1.5 - 1e-12

    def test_noise_features_carry_no_class_signal(self) -> None:
        dataset = SyntheticClassificationDataset(
            n_samples=4000, n_features=4, n_informative=1, class_sep=3.0, seed=0
        )
        X, y = dataset.generate()
        for column in (1, 2, 3):
            gap = abs(X[y == 0, column].mean() - X[y == 1, column].mean())
            assert gap < 0.15

    def test_metadata(self) -> None:
        dataset = SyntheticClassificationDataset(n_samples=10, n_features=3, n_classes=2, seed=3)
        meta = dataset.get_metadata()
        assert meta["class_means"] == dataset.class_means().tolist()
        assert meta["parameters"]["class_sep"] == 1.0

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"n_classes": 1}, "n_classes must be an integer of at least 2, got 1."),
            ({"class_sep": 0}, "class_sep must be a positive number, got 0."),
            ({"class_sep": -1.0}, "class_sep must be a positive number, got -1.0."),
            (
                {"n_samples": 3, "n_classes": 4},
                "n_samples (3) must be at least n_classes (4) so that every class has a "
                "sample; raise n_samples or lower n_classes.",
            ),
            ({"n_samples": -5}, "n_samples must be a positive integer, got -5."),
        ],
    )
    def test_invalid_parameters(self, kwargs: dict[str, object], message: str) -> None:
        with pytest.raises(DatasetError, match=f"^{re.escape(message)}$"):
            SyntheticClassificationDataset(**kwargs)

    def test_memory_limit(self) -> None:
        with pytest.raises(DatasetError, match=r"^Dataset size exceeds 1GB limit"):
            SyntheticClassificationDataset(n_samples=200_000_000, n_features=1)

    def test_seed_is_required(self) -> None:
        with pytest.raises(
            DatasetError, match=r"seed must be provided: pass generate\(seed=\.\.\.\)"
        ):
            SyntheticClassificationDataset().generate()
