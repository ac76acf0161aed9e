"""Validation of the tabular experiment config through ``mlharness.config.validate``."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlharness.config import ConfigWarning, validate
from mlharness.errors import ConfigError, ConfigValidationError
from mlharness.tabular.config import (
    BundledConfig,
    CsvConfig,
    ExperimentConfig,
    LinearRegressionConfig,
    MLPConfig,
    SyntheticClassificationConfig,
    SyntheticRegressionConfig,
)
from mlharness.tabular.runner import build_dataset, dataset_seed

SUPPORTED_DATASETS = (
    "synthetic_regression, synthetic_classification, iris, wine, breast_cancer, digits, "
    "diabetes, csv"
)
HEADER = "Configuration validation failed:\n  - "


def _config(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "exp",
        "dataset": {"name": "synthetic_regression", "params": {"n_features": 4}},
        "model": {"name": "linear_regression"},
    }
    base.update(copy.deepcopy(changes))
    return base


def _mlp(layers: list[int], output: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"layer_sizes": layers}
    if output is not None:
        params["output_activation"] = output
    return {"name": "mlp", "params": params}


def _errors(data: Any, **kwargs: Any) -> str:
    with pytest.raises(ConfigValidationError) as info:
        validate(ExperimentConfig, data, **kwargs)
    return str(info.value)


def _single(data: Any, **kwargs: Any) -> str:
    """The one problem of an invalid config, after checking the message frame."""
    message = _errors(data, **kwargs)
    assert message.startswith(HEADER)
    assert message.count("\n  - ") == 1, message
    return message[len(HEADER) :]


# --------------------------------------------------------------------------- valid configs


@pytest.mark.parametrize(
    ("dataset", "model", "dataset_type", "model_type"),
    [
        (
            {"name": "synthetic_regression", "params": {"n_features": 4, "noise_std": 0.2}},
            {"name": "linear_regression", "params": {"use_gradient_descent": True}},
            SyntheticRegressionConfig,
            LinearRegressionConfig,
        ),
        (
            {"name": "synthetic_regression", "params": {"n_features": 4}},
            _mlp([4, 8, 1]),
            SyntheticRegressionConfig,
            MLPConfig,
        ),
        (
            {"name": "synthetic_classification", "params": {"n_features": 4, "n_classes": 3}},
            _mlp([4, 8, 3], "softmax"),
            SyntheticClassificationConfig,
            MLPConfig,
        ),
        (
            {"name": "synthetic_classification", "params": {"n_features": 4}},
            _mlp([4, 1], "sigmoid"),
            SyntheticClassificationConfig,
            MLPConfig,
        ),
        ({"name": "iris"}, _mlp([4, 3], "softmax"), BundledConfig, MLPConfig),
        ({"name": "wine"}, _mlp([13, 3], "softmax"), BundledConfig, MLPConfig),
        ({"name": "breast_cancer"}, _mlp([30, 1], "sigmoid"), BundledConfig, MLPConfig),
        ({"name": "digits"}, _mlp([64, 10], "softmax"), BundledConfig, MLPConfig),
        (
            {"name": "diabetes"},
            {"name": "linear_regression"},
            BundledConfig,
            LinearRegressionConfig,
        ),
        ({"name": "diabetes"}, _mlp([10, 1]), BundledConfig, MLPConfig),
        (
            {"name": "csv", "path": "data/houses.csv", "params": {"target": "price"}},
            {"name": "linear_regression"},
            CsvConfig,
            LinearRegressionConfig,
        ),
        (
            {
                "name": "csv",
                "path": "d.csv",
                "params": {"target": "label", "task": "classification"},
            },
            _mlp([7, 2], "softmax"),
            CsvConfig,
            MLPConfig,
        ),
    ],
)
def test_valid_configs_for_every_dataset_and_model(
    dataset: dict[str, Any], model: dict[str, Any], dataset_type: type, model_type: type
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid config warns about nothing
        cfg = validate(ExperimentConfig, _config(dataset=dataset, model=model))
    assert isinstance(cfg.dataset, dataset_type)
    assert isinstance(cfg.model, model_type)
    assert cfg.dataset.name == dataset["name"]
    assert cfg.model.name == model["name"]


def test_defaults_match_the_documented_tables() -> None:
    cfg = validate(ExperimentConfig, _config())
    assert cfg.kind == "tabular"
    assert cfg.description is None
    t = cfg.training
    assert (t.epochs, t.batch_size, t.learning_rate, t.optimizer, t.seed, t.params) == (
        10,
        32,
        0.001,
        "adam",
        42,
        {},
    )
    o = cfg.output
    assert (o.directory, o.save_checkpoints, o.checkpoint_frequency, o.save_logs, o.params) == (
        "outputs",
        True,
        1,
        True,
        {},
    )
    p = cfg.dataset.params
    assert (p.n_samples, p.n_features, p.n_informative, p.noise_std, p.seed) == (
        1000,
        4,
        None,
        0.1,
        None,
    )
    classification = validate(
        ExperimentConfig,
        _config(dataset={"name": "synthetic_classification"}, model=_mlp([10, 1], "sigmoid")),
    )
    assert classification.dataset.params.n_classes == 2
    assert classification.dataset.params.class_sep == 1.0


def test_output_activation_none_strings_mean_regression() -> None:
    for text in ("none", "None", "null", ""):
        cfg = validate(ExperimentConfig, _config(model=_mlp([4, 1], text)))
        assert cfg.model.params.output_activation is None


# --------------------------------------------------------------------------- required fields


@pytest.mark.parametrize("field", ["name", "dataset", "model"])
def test_missing_required_field(field: str) -> None:
    data = _config()
    del data[field]
    assert _single(data) == f"Missing required field: '{field}'"


def test_missing_name_message_in_full() -> None:
    data = _config()
    del data["name"]
    assert _errors(data) == "Configuration validation failed:\n  - Missing required field: 'name'"


def test_missing_dataset_name_lists_supported_datasets() -> None:
    assert _single(_config(dataset={"params": {}})) == (
        f"Missing required field: 'dataset.name'. Currently supported: {SUPPORTED_DATASETS}"
    )


def test_missing_model_name_lists_supported_models() -> None:
    assert _single(_config(model={"params": {}})) == (
        "Missing required field: 'model.name'. Currently supported: linear_regression, mlp"
    )


def test_mlp_needs_layer_sizes() -> None:
    assert _single(_config(model={"name": "mlp", "params": {}})) == (
        "Missing required field: 'model.params.layer_sizes'"
    )


def test_csv_needs_path_and_target() -> None:
    assert _single(_config(dataset={"name": "csv", "params": {"target": "y"}})) == (
        "dataset.path is required for the csv dataset: set it to the CSV file, "
        "relative to the workspace root."
    )
    assert _single(_config(dataset={"name": "csv", "path": "d.csv", "params": {}})) == (
        "Missing required field: 'dataset.params.target'"
    )


def test_several_problems_are_listed_one_per_line() -> None:
    data = _config(training={"epochs": 0, "batch_size": -1})
    del data["name"]
    assert _errors(data) == (
        "Configuration validation failed:\n"
        "  - Missing required field: 'name'\n"
        "  - Invalid value for 'training.epochs': Input should be greater than 0 (got 0)\n"
        "  - Invalid value for 'training.batch_size': Input should be greater than 0 (got -1)"
    )
    with pytest.raises(ConfigValidationError) as info:
        validate(ExperimentConfig, data)
    assert info.value.problems == [
        "Missing required field: 'name'",
        "Invalid value for 'training.epochs': Input should be greater than 0 (got 0)",
        "Invalid value for 'training.batch_size': Input should be greater than 0 (got -1)",
    ]


@pytest.mark.parametrize(("data", "kind"), [(None, "empty"), ([1, 2], "list"), ("text", "str")])
def test_config_must_be_a_mapping(data: Any, kind: str) -> None:
    assert _single(data) == f"The configuration must be a mapping of fields to values, got {kind}."


# --------------------------------------------------------------------------- unknown names


def test_unknown_dataset_message() -> None:
    assert _errors(_config(dataset={"name": "my_dataset"})) == (
        "Configuration validation failed:\n"
        f"  - Unknown dataset 'my_dataset'. Currently supported: {SUPPORTED_DATASETS}"
    )


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100", "imagenet"])
def test_planned_dataset_is_not_yet_supported(name: str) -> None:
    assert _single(_config(dataset={"name": name})) == (
        f"Dataset '{name}' is not yet supported.\n    Currently supported: {SUPPORTED_DATASETS}"
    )


@pytest.mark.parametrize("name", ["resnet", "vgg", "mobilenet", "efficientnet", "cnn"])
def test_planned_model_is_not_yet_supported(name: str) -> None:
    assert _single(_config(model={"name": name})) == (
        f"Model '{name}' is not yet supported.\n    Currently supported: linear_regression, mlp"
    )


def test_unknown_model_message() -> None:
    assert _single(_config(model={"name": "custom"})) == (
        "Unknown model 'custom'. Currently supported: linear_regression, mlp"
    )


def test_unknown_dataset_aborts_before_other_checks() -> None:
    # Params of an unknown dataset cannot be checked: only the name is reported.
    assert _single(_config(dataset={"name": "mnist", "params": {"n_samples": -1}})) == (
        f"Dataset 'mnist' is not yet supported.\n    Currently supported: {SUPPORTED_DATASETS}"
    )


# --------------------------------------------------------------------------- invalid values


@pytest.mark.parametrize(
    ("section", "field", "value", "message"),
    [
        ("training", "epochs", -1, "Input should be greater than 0 (got -1)"),
        ("training", "epochs", 0, "Input should be greater than 0 (got 0)"),
        ("training", "learning_rate", -0.1, "Input should be greater than 0 (got -0.1)"),
        ("training", "learning_rate", 0, "Input should be greater than 0 (got 0)"),
        ("training", "batch_size", -32, "Input should be greater than 0 (got -32)"),
        (
            "training",
            "epochs",
            "ten",
            "Input should be a valid integer, unable to parse string as an integer (got 'ten')",
        ),
        (
            "training",
            "validation_fraction",
            1.0,
            "Input should be less than 1 (got 1.0)",
        ),
        (
            "training",
            "optimizer",
            "lbfgs",
            "Input should be 'adam', 'sgd', 'rmsprop' or 'adamw' (got 'lbfgs')",
        ),
        ("output", "checkpoint_frequency", 0, "Input should be greater than 0 (got 0)"),
    ],
)
def test_invalid_training_and_output_values(
    section: str, field: str, value: Any, message: str
) -> None:
    assert _single(_config(**{section: {field: value}})) == (
        f"Invalid value for '{section}.{field}': {message}"
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"n_samples": -5},
            "Invalid value for 'dataset.params.n_samples': Input should be greater than 0 (got -5)",
        ),
        (
            {"noise_std": -0.1},
            "Invalid value for 'dataset.params.noise_std': Input should be "
            "greater than or equal to 0 (got -0.1)",
        ),
    ],
)
def test_invalid_dataset_params(params: dict[str, Any], message: str) -> None:
    assert _single(_config(dataset={"name": "synthetic_regression", "params": params})) == message


def test_invalid_classification_params() -> None:
    data = _config(
        dataset={"name": "synthetic_classification", "params": {"n_classes": 1, "class_sep": 0}},
        model=_mlp([10, 1], "sigmoid"),
    )
    assert _errors(data) == (
        "Configuration validation failed:\n"
        "  - Invalid value for 'dataset.params.n_classes': Input should be greater than or "
        "equal to 2 (got 1)\n"
        "  - Invalid value for 'dataset.params.class_sep': Input should be greater than 0 (got 0)"
    )


def test_layer_sizes_must_be_positive() -> None:
    assert _single(_config(model=_mlp([4, 0, 1]))) == (
        "model.params.layer_sizes: every layer size must be a positive integer, got [4, 0, 1]."
    )


def test_name_with_slash_is_rejected() -> None:
    assert _single(_config(name="runs/exp")) == (
        "name 'runs/exp' must be usable as a directory name: avoid / \\ : * ? \" < > |."
    )


@pytest.mark.parametrize("name", ["..", ".", "a\\b", "a:b", ""])
def test_other_bad_names_are_rejected(name: str) -> None:
    message = _single(_config(name=name))
    if name:
        assert message.startswith(f"name '{name}' must be usable as a directory name")
    else:
        assert message == (
            "Invalid value for 'name': String should have at least 1 character (got '')"
        )


# --------------------------------------------------------------------------- unknown keys


def test_unknown_keys_warn_with_did_you_mean_and_are_dropped() -> None:
    data = _config(
        trainng={"epochs": 3},
        training={"epoch": 5, "batch_size": 8},
        dataset={"name": "synthetic_regression", "params": {"n_features": 4, "n_sample": 7}},
    )
    with pytest.warns(ConfigWarning) as record:
        cfg = validate(ExperimentConfig, data)
    assert sorted(str(w.message) for w in record) == [
        "Unknown configuration key 'epoch' in 'training' (did you mean 'epochs'?).",
        "Unknown configuration key 'n_sample' in 'dataset.params' (did you mean 'n_samples'?).",
        "Unknown configuration key 'trainng' (did you mean 'training'?).",
    ]
    assert cfg.training.epochs == 10  # 'epoch' was dropped, the default stays
    assert cfg.training.batch_size == 8
    assert cfg.dataset.params.n_samples == 1000
    assert "trainng" not in cfg.model_dump()


def test_unknown_key_without_close_match_lists_known_keys() -> None:
    with pytest.warns(ConfigWarning) as record:
        validate(ExperimentConfig, _config(training={"zzz": 1}))
    assert [str(w.message) for w in record] == [
        "Unknown configuration key 'zzz' in 'training'. Known keys: batch_size, epochs, "
        "learning_rate, optimizer, params, seed, shuffle, validation_fraction."
    ]


def test_unknown_keys_still_warn_when_validation_fails() -> None:
    with pytest.warns(ConfigWarning, match="did you mean 'training'"):
        message = _single(_config(trainng=1, training={"epochs": -1}))
    assert message == "Invalid value for 'training.epochs': Input should be greater than 0 (got -1)"


def test_strict_mode_turns_unknown_keys_into_errors() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = _config(
            trainng={"epochs": 3}, model={"name": "linear_regression", "params": {"sed": 1}}
        )
        message = _errors(data, strict=True)
    assert message == (
        "Configuration validation failed:\n"
        "  - Unknown configuration key 'sed' in 'model.params' (did you mean 'seed'?).\n"
        "  - Unknown configuration key 'trainng' (did you mean 'training'?)."
    )


def test_free_form_params_accept_any_key() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = validate(
            ExperimentConfig,
            _config(training={"params": {"momentum": 0.9}}, output={"params": {"x": 1}}),
            strict=True,
        )
    assert cfg.training.params == {"momentum": 0.9}


def test_validation_error_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        validate(ExperimentConfig, {})


# --------------------------------------------------------------------------- compatibility


def test_mlp_first_layer_must_match_n_features() -> None:
    assert _single(_config(model=_mlp([5, 1]))) == (
        "model.params.layer_sizes starts with 5 but the dataset has 4 features: make the first "
        "layer size 4."
    )


def test_bundled_dataset_features_are_known_without_loading() -> None:
    data = _config(dataset={"name": "iris"}, model=_mlp([10, 3], "softmax"))
    assert _single(data) == (
        "model.params.layer_sizes starts with 10 but the dataset has 4 features: make the first "
        "layer size 4."
    )


def test_softmax_last_layer_must_match_n_classes() -> None:
    data = _config(
        dataset={"name": "synthetic_classification", "params": {"n_features": 4, "n_classes": 3}},
        model=_mlp([4, 8, 2], "softmax"),
    )
    assert _single(data) == (
        "model.params.layer_sizes ends with 2 but the dataset has 3 classes: make the last layer "
        "size 3 for softmax."
    )


def test_sigmoid_needs_two_classes_and_one_output() -> None:
    data = _config(dataset={"name": "iris"}, model=_mlp([4, 3], "sigmoid"))
    assert _single(data) == (
        "output_activation 'sigmoid' needs a two-class dataset and a last layer of 1 (dataset "
        "has 3 classes, last layer is 3); use 'softmax' with a last layer of 3 otherwise."
    )


def test_linear_regression_on_classification_is_rejected() -> None:
    data = _config(
        dataset={"name": "synthetic_classification", "params": {"n_classes": 3}},
    )
    assert _single(data) == (
        "linear_regression is a regression model but the dataset is a classification dataset "
        "with 3 classes. Use model 'mlp' with output_activation 'softmax' (or 'sigmoid' for two "
        "classes)."
    )


def test_regression_with_softmax_is_rejected() -> None:
    data = _config(model=_mlp([4, 2], "softmax"))
    assert _single(data) == (
        "output_activation 'softmax' is for classification but the dataset is a regression "
        "dataset: set model.params.output_activation to null."
    )


def test_classification_without_output_activation() -> None:
    two = _config(dataset={"name": "breast_cancer"}, model=_mlp([30, 2]))
    assert _single(two) == (
        "The dataset is a classification dataset: set model.params.output_activation to "
        "'softmax' with a last layer of 2, or 'sigmoid' with a last layer of 1."
    )
    three = _config(dataset={"name": "wine"}, model=_mlp([13, 3]))
    assert _single(three) == (
        "The dataset is a classification dataset: set model.params.output_activation to "
        "'softmax' with a last layer of 3."
    )


def test_csv_compatibility_is_not_checked_before_loading() -> None:
    # The CSV's shape is unknown until the file is read: the runner checks it then.
    data = _config(
        dataset={"name": "csv", "path": "x.csv", "params": {"target": "y"}},
        model=_mlp([99, 2], "softmax"),
    )
    assert validate(ExperimentConfig, data).model.params.layer_sizes == [99, 2]


# --------------------------------------------------------------------------- determinism


def test_config_with_seed_produces_deterministic_data() -> None:
    data = _config(
        dataset={"name": "synthetic_classification", "params": {"n_samples": 60, "seed": 7}},
        model=_mlp([10, 1], "sigmoid"),
    )
    first = build_dataset(validate(ExperimentConfig, data))
    second = build_dataset(validate(ExperimentConfig, copy.deepcopy(data)))
    X1, y1 = first.generate()
    X2, y2 = second.generate()
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    X3, _ = first.generate()
    np.testing.assert_array_equal(X1, X3)

    other = copy.deepcopy(data)
    other["dataset"]["params"]["seed"] = 8
    X4, _ = build_dataset(validate(ExperimentConfig, other)).generate()
    assert not np.array_equal(X1, X4)


def test_dataset_without_seed_uses_the_training_seed_deterministically() -> None:
    data = _config(training={"seed": 123})
    cfg = validate(ExperimentConfig, data)
    assert dataset_seed(cfg) == 123
    X1, y1 = build_dataset(cfg).generate()
    X2, y2 = build_dataset(validate(ExperimentConfig, data)).generate()
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)


def test_csv_path_is_resolved_in_the_workspace(workspace: Path) -> None:
    (workspace / "data").mkdir()
    (workspace / "data" / "d.csv").write_text(
        "a,b,y\n1,2,3.5\n4,5,6.5\n7,8,10.5\n", encoding="utf-8"
    )
    cfg = validate(
        ExperimentConfig,
        _config(dataset={"name": "csv", "path": "data/d.csv", "params": {"target": "y"}}),
    )
    X, y = build_dataset(cfg).generate()
    assert X.shape == (3, 2)
    np.testing.assert_array_equal(y, [3.5, 6.5, 10.5])
