"""MLP: backpropagation against finite differences, training, safeguards, checkpoints."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from mlharness.errors import ModelError
from mlharness.tabular.config import MLPParams
from mlharness.tabular.mlp import MLP

ACTIVATIONS = ["relu", "tanh", "sigmoid"]
# (output_activation, outputs, target kind)
OUTPUTS = [
    (None, 1, "values"),
    (None, 2, "values"),
    ("sigmoid", 1, "binary"),
    ("sigmoid", 2, "binary"),
    ("softmax", 3, "labels"),
    ("softmax", 3, "onehot"),
]


def _targets(kind: str, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "values":
        return rng.normal(size=n) if k == 1 else rng.normal(size=(n, k))
    if kind == "binary":
        return rng.integers(0, 2, size=n).astype(float) if k == 1 else rng.integers(0, 2, (n, k))
    labels = rng.integers(0, k, size=n)
    return labels if kind == "labels" else np.eye(k)[labels]


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(("output", "k", "kind"), OUTPUTS)
def test_gradients_match_central_finite_differences(
    activation: str, output: str | None, k: int, kind: str
) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(7, 4))
    y = _targets(kind, 7, k, rng)
    model = MLP([4, 6, 5, k], activation=activation, output_activation=output, seed=1)
    model.biases[0][:] = rng.normal(scale=0.1, size=6)  # nonzero biases get checked too

    loss, grads = model._gradients(X, model._targets(y))
    analytic = np.concatenate([g.ravel() for g in grads])
    assert loss == pytest.approx(model.loss(X, y), rel=1e-12)

    params = model._params  # every weight and bias, as one flat view
    numeric = np.empty_like(params)
    h = 1e-6
    for i in range(params.size):
        old = params[i]
        params[i] = old + h
        up = model.loss(X, y)
        params[i] = old - h
        down = model.loss(X, y)
        params[i] = old
        numeric[i] = (up - down) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_cross_entropy_is_stable_for_huge_logits() -> None:
    model = MLP([2, 3], output_activation="softmax", seed=0)
    model.weights[0][:] = [[10, -10, 0], [10, -10, 0]]
    X = np.array([[100.0, 100.0]])  # logits 2000, -2000, 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings
        assert model.loss(X, np.array([0])) == pytest.approx(0.0, abs=1e-12)
        assert model.loss(X, np.array([1])) == pytest.approx(4000.0)
        np.testing.assert_allclose(model.predict(X), [[1.0, 0.0, 0.0]])


def test_binary_cross_entropy_is_stable_for_huge_logits() -> None:
    model = MLP([1, 1], output_activation="sigmoid", seed=0)
    model.weights[0][:] = 10.0
    X = np.array([[100.0], [-100.0]])  # logits 1000 and -1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.loss(X, np.array([1.0, 0.0])) == pytest.approx(0.0, abs=1e-12)
        assert model.loss(X, np.array([0.0, 1.0])) == pytest.approx(1000.0)
        np.testing.assert_allclose(model.predict(X), [1.0, 0.0], atol=1e-12)


def _fit(model: MLP, X: np.ndarray, y: np.ndarray, epochs: int, batch: int = 16) -> None:
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch):
            idx = order[start : start + batch]
            model.train_step(X[idx], y[idx])


def test_training_reduces_regression_loss() -> None:
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(200, 1))
    y = np.sin(2 * X[:, 0])
    model = MLP([1, 16, 1], activation="tanh", seed=0, optimizer_config={"learning_rate": 0.01})
    before = model.loss(X, y)
    _fit(model, X, y, epochs=60)
    assert model.loss(X, y) < 0.1 * before
    assert model.task == "regression"
    assert model.predict(X).shape == (200,)


def test_training_reduces_classification_loss() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0]])
    y = rng.integers(0, 3, size=300)
    X = centres[y] + 0.5 * rng.normal(size=(300, 2))
    model = MLP(
        [2, 8, 3], output_activation="softmax", seed=0, optimizer_config={"learning_rate": 0.01}
    )
    before = model.loss(X, y)
    _fit(model, X, y, epochs=20)
    assert model.loss(X, y) < 0.3 * before
    proba = model.predict(X)
    assert proba.shape == (300, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (proba.argmax(axis=1) == y).mean() > 0.95
    assert model.task == "classification"


def test_train_step_returns_the_loss_before_the_update() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(16, 3)), rng.normal(size=16)
    model = MLP([3, 4, 1], seed=0)
    before = model.loss(X, y)
    assert model.train_step(X, y)["loss"] == pytest.approx(before, rel=1e-12)
    assert model.loss(X, y) != before


def test_huge_learning_rate_warns_and_weights_stay_clipped() -> None:
    model = MLP(
        [3, 8, 1], seed=0, optimizer_config={"optimizer_type": "sgd", "learning_rate": 100.0}
    )
    rng = np.random.default_rng(0)
    X, y = 50 * rng.normal(size=(32, 3)), 1e6 * rng.normal(size=32)
    with pytest.warns(UserWarning) as record:  # at first use, where the optimizer is built
        model.train_step(X, y)
    assert str(record[0].message) == (
        "learning_rate 100 is above 1.0, so training may diverge (gradients and weights are "
        "clipped to [-10, 10], but the loss can still explode). Try 0.1 or less."
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value warnings either
        for _ in range(20):
            loss = model.train_step(X, y)["loss"]
    assert np.isfinite(loss)
    assert np.abs(model._params).max() <= 10.0
    assert np.abs(model._params).max() == 10.0  # the clip was actually needed


def test_gradients_are_clipped_before_the_update() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(8, 2)), 1e6 * np.ones(8)
    model = MLP([2, 1], seed=0, optimizer_config={"optimizer_type": "sgd", "learning_rate": 0.1})
    before = np.concatenate([model.weights[0].ravel(), model.biases[0]])
    model.train_step(X, y)
    assert np.abs(model._params - before).max() == pytest.approx(0.1 * 10.0)


def test_no_warning_for_ordinary_learning_rates() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MLP([3, 1], optimizer_config={"learning_rate": 1.0}).predict(np.zeros((1, 3)))


def test_same_seed_gives_identical_training() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 5)), rng.integers(0, 2, size=64).astype(float)

    def run(seed: int) -> np.ndarray:
        model = MLP([5, 7, 1], output_activation="sigmoid", seed=seed)
        _fit(model, X, y, epochs=3)
        return model._params.copy()

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


@pytest.mark.parametrize(
    ("activation", "init", "std"),
    [
        ("relu", "auto", np.sqrt(2 / 400)),
        ("tanh", "auto", np.sqrt(2 / 800)),
        ("sigmoid", "he", np.sqrt(2 / 400)),
        ("relu", "xavier", np.sqrt(2 / 800)),
    ],
)
def test_initialisation_scale(activation: str, init: str, std: float) -> None:
    model = MLP([400, 400, 1], activation=activation, init=init, seed=0)
    assert model.weights[0].std() == pytest.approx(std, rel=0.02)
    assert not model.biases[0].any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"layer_sizes": [10]},
            "MLP: Invalid value for 'layer_sizes': List should have at least 2 items after "
            "validation, not 1.",
        ),
        (
            {"layer_sizes": [10, 0, 1]},
            "MLP: layer_sizes: every layer size must be a positive integer, got [10, 0, 1].",
        ),
        (
            {"layer_sizes": [10, 2.5, 1]},
            "MLP: Invalid value for 'layer_sizes.1': Input should be a valid integer (got 2.5).",
        ),
        (
            {"layer_sizes": [10, True, 1]},
            "MLP: Invalid value for 'layer_sizes.1': Input should be a valid integer (got True).",
        ),
        (
            {"layer_sizes": 5},
            "MLP: Invalid value for 'layer_sizes': Input should be a valid list (got 5).",
        ),
        (
            {"layer_sizes": [2, 1], "activation": "gelu"},
            "MLP: Invalid value for 'activation': Input should be 'relu', 'tanh' or 'sigmoid' "
            "(got 'gelu').",
        ),
        (
            {"layer_sizes": [2, 1], "output_activation": "linear"},
            "MLP: Invalid value for 'output_activation': Input should be 'sigmoid' or 'softmax' "
            "(got 'linear').",
        ),
        (
            {"layer_sizes": [2, 1], "output_activation": "softmax"},
            "MLP: output_activation 'softmax' needs at least 2 outputs, but layer_sizes ends in "
            "1. Use 'sigmoid' for binary classification, or make the last layer size the number "
            "of classes.",
        ),
        (
            {"layer_sizes": [2, 1], "init": "orthogonal"},
            "MLP: Invalid value for 'init': Input should be 'auto', 'he' or 'xavier' "
            "(got 'orthogonal').",
        ),
        (
            {"layer_sizes": [2, 1], "seed": "7"},
            "MLP: Invalid value for 'seed': Input should be a valid integer (got '7').",
        ),
        (
            {"layer_sizes": [2, 1], "activation": "gelu", "init": "orthogonal"},
            "MLP: Invalid value for 'activation': Input should be 'relu', 'tanh' or 'sigmoid' "
            "(got 'gelu'); Invalid value for 'init': Input should be 'auto', 'he' or 'xavier' "
            "(got 'orthogonal').",
        ),
    ],
)
@pytest.mark.parametrize("first_use", ["train_step", "predict", "loss", "save", "weights"])
def test_invalid_arguments_are_refused_at_first_use(
    kwargs: dict[str, object], message: str, first_use: str, tmp_path: Path
) -> None:
    # scikit-learn's rule: the constructor only stores; the arguments are checked once, by
    # the config schema's own rules (tabular/config.py MLPParams), when the model is used.
    model = MLP(**kwargs)  # type: ignore[arg-type]
    X, y = np.zeros((4, 2)), np.zeros(4)
    uses = {
        "train_step": lambda: model.train_step(X, y),
        "predict": lambda: model.predict(X),
        "loss": lambda: model.loss(X, y),
        "save": lambda: model.save(tmp_path / "m"),
        "weights": lambda: model.weights,
    }
    with pytest.raises(ModelError) as info:
        uses[first_use]()
    assert str(info.value) == message
    assert not (tmp_path / "m").exists()


def test_numpy_and_tuple_arguments_are_accepted() -> None:
    model = MLP((np.int64(3), 4, np.int32(1)), seed=np.int64(5))
    assert model.predict(np.zeros((2, 3))).shape == (2,)
    assert model.hyperparameters["layer_sizes"] == [3, 4, 1]
    assert model.weights[0].shape == (3, 4)


def test_a_bad_optimizer_config_is_refused_at_first_use() -> None:
    model = MLP([2, 1], optimizer_config={"optimizer_type": "adagrad"})
    with pytest.raises(ModelError) as info:
        model.train_step(np.zeros((2, 2)), np.zeros(2))
    assert str(info.value) == (
        "Unknown optimizer 'adagrad'. Supported optimizers: adam, adamw, rmsprop, sgd."
    )


def test_a_validated_config_builds_without_a_second_check() -> None:
    # model_construct skips validation: a value the schema would refuse shows that
    # from_params (the config path) trusts the schema and does not check again.
    unchecked = MLPParams.model_construct(
        layer_sizes=[2, 1], activation="relu", output_activation="softmax", init="auto"
    )
    model = MLP.from_params(unchecked, seed=0, optimizer_config=None)
    assert model._built and model.weights[0].shape == (2, 1)
    checked = MLPParams(layer_sizes=[2, 3], output_activation="softmax")
    built = MLP.from_params(checked, seed=0, optimizer_config={"learning_rate": 0.01})
    assert built.hyperparameters == {
        "layer_sizes": [2, 3],
        "activation": "relu",
        "output_activation": "softmax",
        "seed": 0,
        "init": "auto",
    }
    assert built.optimizer.learning_rate == 0.01


def test_output_activation_none_string_means_regression() -> None:
    model = MLP([2, 1], output_activation="none")
    assert model.task == "regression"
    assert model.output_activation is None


@pytest.mark.parametrize(
    ("model_kwargs", "y", "message"),
    [
        (
            {"output_activation": "softmax", "layer_sizes": [2, 3]},
            np.array([0, 1, 3, 1]),
            "y must hold class labels 0 to 2 for this 3-output softmax MLP; got values from 0 "
            "to 3.",
        ),
        (
            {"output_activation": "sigmoid", "layer_sizes": [2, 1]},
            np.array([0, 1, 2, 1]),
            "y must hold 0/1 labels (or probabilities) for a sigmoid MLP.",
        ),
        (
            {"layer_sizes": [2, 2]},
            np.zeros(4),
            "y has shape (4,), but this MLP has 2 outputs: pass shape (n_samples, 2).",
        ),
        ({"layer_sizes": [2, 1]}, np.zeros(3), "X has 4 rows but y has 3; they must match."),
        (
            {"layer_sizes": [2, 1]},
            np.array([0.0, np.nan, 0.0, 0.0]),
            "y contains NaN or infinite values; remove those samples first.",
        ),
    ],
)
def test_loss_validates_targets(
    model_kwargs: dict[str, object], y: np.ndarray, message: str
) -> None:
    model = MLP(**model_kwargs)  # type: ignore[arg-type]
    with pytest.raises(ModelError) as info:
        model.loss(np.zeros((4, 2)), y)
    assert str(info.value) == message


def test_save_load_resumes_training_identically(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(48, 4)), rng.integers(0, 3, size=48)
    kwargs = {"layer_sizes": [4, 6, 3], "output_activation": "softmax", "seed": 0}
    straight = MLP(**kwargs)  # type: ignore[arg-type]
    for _ in range(6):
        straight.train_step(X, y)

    first = MLP(**kwargs)  # type: ignore[arg-type]
    for _ in range(3):
        first.train_step(X, y)
    first.save(tmp_path / "ckpt")
    second = MLP(**{**kwargs, "seed": 123})  # type: ignore[arg-type]
    second.load(tmp_path / "ckpt")
    for _ in range(3):
        second.train_step(X, y)
    np.testing.assert_array_equal(second._params, straight._params)


def test_loading_another_architecture_names_both_layer_lists(tmp_path: Path) -> None:
    MLP([10, 5, 1], seed=0).save(tmp_path / "p")
    model = MLP([10, 3, 1], seed=0)
    with pytest.raises(ModelError) as info:
        model.load(tmp_path / "p")
    assert str(info.value) == (
        f"Cannot load checkpoint '{tmp_path / 'p'}': it holds an MLP with layer_sizes "
        "[10, 5, 1], but this model has layer_sizes [10, 3, 1]."
    )


def test_loading_another_activation_is_refused(tmp_path: Path) -> None:
    MLP([4, 3, 1], activation="tanh").save(tmp_path / "p")
    with pytest.raises(ModelError) as info:
        MLP([4, 3, 1], activation="relu").load(tmp_path / "p")
    assert str(info.value) == (
        f"Cannot load checkpoint '{tmp_path / 'p'}': it holds an MLP with activation 'tanh', "
        "but this model has activation 'relu'."
    )


def test_weights_are_float64_views_of_one_flat_array() -> None:
    model = MLP([3, 4, 2], seed=0)
    model.predict(np.zeros((1, 3)))  # built at first use
    assert model._params.dtype == np.float64
    for array in [*model.weights, *model.biases]:
        assert array.base is model._params
    assert model._params.size == 3 * 4 + 4 + 4 * 2 + 2
