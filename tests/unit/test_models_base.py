"""The BaseModel contract, kept by both models, and the checkpoint directory format."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mlharness import models
from mlharness.errors import CheckpointError, ModelError
from mlharness.tabular import base
from mlharness.tabular.base import BaseModel
from mlharness.tabular.factory import load_model
from mlharness.tabular.linear import LinearRegression
from mlharness.tabular.mlp import MLP

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 4))
Y_REG = X @ np.array([1.0, -2.0, 0.5, 3.0]) + 1.0
Y_CLS = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int)  # labels 0, 1, 2


def closed_form() -> BaseModel:
    model = LinearRegression(l2_regularization=0.01)
    model.train_step(X, Y_REG)
    return model


def gradient_descent() -> BaseModel:
    model = LinearRegression(
        seed=0,
        use_gradient_descent=True,
        optimizer_config={"optimizer_type": "sgd", "learning_rate": 0.01, "momentum": 0.9},
    )
    for _ in range(3):
        model.train_step(X, Y_REG)
    return model


def mlp_regressor() -> BaseModel:
    model = MLP([4, 5, 1], activation="tanh", seed=0)
    for _ in range(3):
        model.train_step(X, Y_REG)
    return model


def mlp_classifier() -> BaseModel:
    model = MLP(
        [4, 6, 3],
        output_activation="softmax",
        seed=0,
        optimizer_config={"optimizer_type": "rmsprop", "learning_rate": 0.01},
    )
    for _ in range(3):
        model.train_step(X, Y_CLS)
    return model


FACTORIES: dict[str, Callable[[], BaseModel]] = {
    "closed_form": closed_form,
    "gradient_descent": gradient_descent,
    "mlp_regressor": mlp_regressor,
    "mlp_classifier": mlp_classifier,
}


@pytest.fixture(params=list(FACTORIES))
def model(request: pytest.FixtureRequest) -> BaseModel:
    return FACTORIES[request.param]()


# ------------------------------------------------------------------ the contract


def test_both_models_are_base_models_with_task_and_iterativity() -> None:
    facts = {
        name: (factory().name, factory().task, factory().is_iterative)
        for name, factory in FACTORIES.items()
    }
    assert facts == {
        "closed_form": ("linear_regression", "regression", False),
        "gradient_descent": ("linear_regression", "regression", True),
        "mlp_regressor": ("mlp", "regression", True),
        "mlp_classifier": ("mlp", "classification", True),
    }
    assert all(isinstance(factory(), BaseModel) for factory in FACTORIES.values())


def test_predict_shape(model: BaseModel) -> None:
    out = model.predict(X)
    expected = (40, 3) if model.task == "classification" else (40,)
    assert out.shape == expected
    assert out.dtype == np.float64
    np.testing.assert_array_equal(model.predict(X.tolist()), out)  # lists are accepted
    np.testing.assert_allclose(model.predict(X.astype(np.float32)), out, atol=1e-5)


@pytest.mark.parametrize(
    ("bad_X", "message"),
    [
        (
            np.ones(4),
            "X must be a 2-D array of shape (n_samples, n_features), but it has shape (4,). "
            "Use X.reshape(-1, 1) for a single feature or X.reshape(1, -1) for a single sample.",
        ),
        (np.ones((2, 5)), "X has 5 features but the model was built for 4."),
        (np.array([["a", "b", "c", "d"]]), "X must hold numbers, but its dtype is <U1."),
        (
            [[1.0, 2.0, 3.0, 4.0], [1.0]],
            "X must be a rectangular 2-D array of numbers, but its rows have different lengths.",
        ),
        (np.ones((0, 4)), "X has no rows; pass at least one sample."),
        (
            np.array([[1.0, np.nan, 0.0, 0.0]]),
            "X contains NaN or infinite values; remove or impute them first.",
        ),
        (
            np.array([[1.0, np.inf, 0.0, 0.0]]),
            "X contains NaN or infinite values; remove or impute them first.",
        ),
    ],
)
def test_predict_validates_X(model: BaseModel, bad_X: object, message: str) -> None:
    with pytest.raises(ModelError) as info:
        model.predict(bad_X)
    assert str(info.value) == message


def test_loss_validates_X_too(model: BaseModel) -> None:
    with pytest.raises(ModelError) as info:
        model.loss(np.ones((3, 7)), np.zeros(3))
    assert str(info.value) == "X has 7 features but the model was built for 4."


def test_errors_are_value_errors_for_library_users(model: BaseModel) -> None:
    with pytest.raises(ValueError):
        model.predict(np.ones(3))


# ------------------------------------------------------------------ checkpoints


def test_save_load_roundtrip_gives_identical_predictions(model: BaseModel, tmp_path: Path) -> None:
    model.save(tmp_path / "ckpt")
    fresh = type(model)(**_constructor_args(model))
    fresh.load(tmp_path / "ckpt")
    np.testing.assert_array_equal(fresh.predict(X), model.predict(X))


def test_load_model_rebuilds_the_right_model(model: BaseModel, tmp_path: Path) -> None:
    model.save(tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    assert type(loaded) is type(model)
    assert loaded.is_iterative == model.is_iterative
    assert loaded.task == model.task
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.hyperparameters == model.hyperparameters


def test_checkpoint_files(model: BaseModel, tmp_path: Path) -> None:
    model.save(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "model.json").read_text())
    assert meta["format_version"] == 1
    assert meta["model"] == model.name
    assert meta["hyperparameters"] == model.hyperparameters
    with np.load(tmp_path / "ckpt" / "weights.npz", allow_pickle=False) as weights:
        assert {k: list(weights[k].shape) for k in weights.files} == meta["shapes"]
        assert all(weights[k].dtype == np.float64 for k in weights.files)
    has_optimizer = (tmp_path / "ckpt" / "optimizer.npz").is_file()
    assert has_optimizer == model.is_iterative
    if has_optimizer:
        assert meta["optimizer_config"]["optimizer_type"] in ("sgd", "adam", "rmsprop")
        with np.load(tmp_path / "ckpt" / "optimizer.npz", allow_pickle=False) as state:
            assert int(state["step"]) == 3


def test_model_json_of_an_mlp() -> None:
    model = MLP([4, 6, 3], output_activation="softmax", seed=5)
    assert model.hyperparameters == {
        "layer_sizes": [4, 6, 3],
        "activation": "relu",
        "output_activation": "softmax",
        "seed": 5,
        "init": "auto",
    }


def test_save_replaces_an_existing_checkpoint(tmp_path: Path) -> None:
    first, second = closed_form(), mlp_regressor()
    first.save(tmp_path / "ckpt")
    second.save(tmp_path / "ckpt")
    assert isinstance(load_model(tmp_path / "ckpt"), MLP)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_failed_save_leaves_no_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = mlp_classifier()

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(base.np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        model.save(tmp_path / "ckpt")
    assert list(tmp_path.iterdir()) == []  # neither the checkpoint nor a temporary directory


def test_failed_overwrite_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = closed_form()
    old.save(tmp_path / "ckpt")
    monkeypatch.setattr(base, "atomic_write_json", lambda *a: (_ for _ in ()).throw(OSError("x")))
    with pytest.raises(OSError):
        mlp_regressor().save(tmp_path / "ckpt")
    monkeypatch.undo()
    np.testing.assert_array_equal(load_model(tmp_path / "ckpt").predict(X), old.predict(X))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_missing_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "checkpoint_final"
    for load in (load_model, LinearRegression().load):
        with pytest.raises(CheckpointError) as info:
            load(path)
        assert str(info.value) == (
            f"Checkpoint '{path}' does not exist. Check the path; a run's checkpoints are in "
            "its checkpoints/ directory (e.g. checkpoints/checkpoint_final)."
        )


def test_checkpoint_path_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "weights.npz")
    assert str(info.value) == (
        f"Checkpoint '{tmp_path / 'weights.npz'}' is a file, but checkpoints are directories "
        "holding model.json and weights.npz. Pass the directory instead."
    )


def test_checkpoint_without_model_json(tmp_path: Path) -> None:
    closed_form().save(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.json").unlink()
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "ckpt")
    assert str(info.value) == (
        f"Checkpoint '{tmp_path / 'ckpt'}' has no model.json, so it is incomplete or not an "
        "mlharness checkpoint. Use another checkpoint or save this one again."
    )


def test_checkpoint_without_weights(tmp_path: Path) -> None:
    closed_form().save(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "weights.npz").unlink()
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "ckpt")
    assert str(info.value) == (
        f"Checkpoint '{tmp_path / 'ckpt'}' has no weights.npz, so it is incomplete. Use "
        "another checkpoint or save this one again."
    )


def test_checkpoint_with_corrupt_weights(tmp_path: Path) -> None:
    closed_form().save(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "weights.npz").write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "ckpt")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'ckpt' / 'weights.npz'} cannot be read (")
    assert message.endswith("). Use another checkpoint or save this one again.")


def test_checkpoint_with_wrong_format_version(tmp_path: Path) -> None:
    closed_form().save(tmp_path / "ckpt")
    meta_file = tmp_path / "ckpt" / "model.json"
    meta = json.loads(meta_file.read_text())
    meta["format_version"] = 2
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "ckpt")
    assert str(info.value) == (
        f"Checkpoint '{tmp_path / 'ckpt'}' has format_version 2, but this version of mlharness "
        "reads format_version 1. Load it with the mlharness version that wrote it, or train "
        "the model again."
    )


def test_checkpoint_of_another_model(tmp_path: Path) -> None:
    closed_form().save(tmp_path / "ckpt")
    with pytest.raises(CheckpointError) as info:
        MLP([4, 1]).load(tmp_path / "ckpt")
    assert str(info.value) == (
        f"Checkpoint '{tmp_path / 'ckpt'}' holds a 'linear_regression' model, not a 'mlp' "
        "model. Load it with mlharness.models.load_model(path), which builds the model the "
        "checkpoint holds."
    )


def test_checkpoint_of_an_unknown_model(tmp_path: Path) -> None:
    closed_form().save(tmp_path / "ckpt")
    meta_file = tmp_path / "ckpt" / "model.json"
    meta = json.loads(meta_file.read_text())
    meta["model"] = "resnet"
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "ckpt")
    assert str(info.value) == (
        f"Checkpoint '{tmp_path / 'ckpt'}' holds an unknown model 'resnet'. Supported models: "
        "linear_regression, mlp."
    )


def test_checkpoint_whose_arrays_disagree_with_model_json(tmp_path: Path) -> None:
    closed_form().save(tmp_path / "ckpt")
    np.savez(tmp_path / "ckpt" / "weights.npz", coef=np.zeros(3), intercept=np.zeros(()))
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "ckpt")
    assert str(info.value) == (
        f"{tmp_path / 'ckpt' / 'weights.npz'} should hold 'coef' of shape [4] but holds [3]; "
        "the checkpoint is damaged. Use another checkpoint or save it again."
    )


def test_facade_exports_the_public_api() -> None:
    assert models.LinearRegression is LinearRegression
    assert models.MLP is MLP
    assert models.BaseModel is BaseModel
    assert models.load_model is load_model
    assert sorted(models.__all__) == sorted(
        ["BaseModel", "LinearRegression", "MLP", "load_model", "make_optimizer"]
    )


def test_seed_example_loads_into_a_default_model(tmp_path: Path) -> None:
    # The seed's "Model Serialization" example: save, then load into LinearRegression().
    model = LinearRegression(seed=42)
    model.train_step(X, Y_REG)
    model.save(tmp_path / "my_model")
    loaded_model = LinearRegression()
    loaded_model.load(tmp_path / "my_model")
    np.testing.assert_array_equal(loaded_model.predict(X), model.predict(X))


def _constructor_args(model: BaseModel) -> dict[str, object]:
    args = dict(model.hyperparameters)
    args["optimizer_config"] = model.optimizer.config if model.optimizer else None
    return args
