"""NumPy optimizers against scalar re-implementations of the torch.optim update rules."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mlharness.errors import ModelError
from mlharness.tabular.optim import OPTIMIZERS, SGD, Adam, AdamW, Optimizer, RMSprop, make_optimizer

# ---------------------------------------------------------------- scalar references
# Written from the pseudo-code in the torch.optim documentation, one float at a time, so
# they share no code (and no vectorisation trick) with the implementation under test.

Reference = Callable[[list[float], list[list[float]]], list[float]]


def sgd_reference(
    lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0
) -> Reference:
    def run(params: list[float], grad_steps: list[list[float]]) -> list[float]:
        p = list(params)
        buf: list[float | None] = [None] * len(p)
        for grads in grad_steps:
            for j, g in enumerate(grads):
                g = g + weight_decay * p[j]
                if momentum:
                    previous = buf[j]
                    b = g if previous is None else momentum * previous + g
                    buf[j] = b
                    g = g + momentum * b if nesterov else b
                p[j] -= lr * g
        return p

    return run


def adam_reference(
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled: bool = False,
) -> Reference:
    def run(params: list[float], grad_steps: list[list[float]]) -> list[float]:
        p = list(params)
        m = [0.0] * len(p)
        v = [0.0] * len(p)
        for t, grads in enumerate(grad_steps, start=1):
            for j, g in enumerate(grads):
                if decoupled:
                    p[j] *= 1 - lr * weight_decay
                else:
                    g = g + weight_decay * p[j]
                m[j] = beta1 * m[j] + (1 - beta1) * g
                v[j] = beta2 * v[j] + (1 - beta2) * g * g
                m_hat = m[j] / (1 - beta1**t)
                v_hat = v[j] / (1 - beta2**t)
                p[j] -= lr * m_hat / (math.sqrt(v_hat) + eps)
        return p

    return run


def rmsprop_reference(
    lr: float,
    alpha: float = 0.99,
    eps: float = 1e-8,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> Reference:
    def run(params: list[float], grad_steps: list[list[float]]) -> list[float]:
        p = list(params)
        sq = [0.0] * len(p)
        buf = [0.0] * len(p)
        for grads in grad_steps:
            for j, g in enumerate(grads):
                g = g + weight_decay * p[j]
                sq[j] = alpha * sq[j] + (1 - alpha) * g * g
                step = g / (math.sqrt(sq[j]) + eps)
                if momentum:
                    buf[j] = momentum * buf[j] + step
                    step = buf[j]
                p[j] -= lr * step
        return p

    return run


CASES: list[tuple[str, dict[str, object], Reference]] = [
    ("sgd", {"learning_rate": 0.1}, sgd_reference(0.1)),
    ("sgd", {"learning_rate": 0.1, "momentum": 0.9}, sgd_reference(0.1, 0.9)),
    (
        "sgd",
        {"learning_rate": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1},
        sgd_reference(0.05, 0.8, True, 0.1),
    ),
    ("adam", {"learning_rate": 0.01}, adam_reference(0.01)),
    (
        "adam",
        {"learning_rate": 0.01, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.1},
        adam_reference(0.01, 0.8, 0.99, 1e-6, 0.1),
    ),
    ("adamw", {"learning_rate": 0.01}, adam_reference(0.01, weight_decay=0.01, decoupled=True)),
    (
        "adamw",
        {"learning_rate": 0.02, "weight_decay": 0.5},
        adam_reference(0.02, weight_decay=0.5, decoupled=True),
    ),
    ("rmsprop", {"learning_rate": 0.01}, rmsprop_reference(0.01)),
    (
        "rmsprop",
        {"learning_rate": 0.01, "alpha": 0.9, "momentum": 0.5, "weight_decay": 0.2},
        rmsprop_reference(0.01, 0.9, momentum=0.5, weight_decay=0.2),
    ),
]
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(CASES)]


def _problem(seed: int = 0, steps: int = 5) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=(3, 2)), rng.normal(size=4)]
    grads = [[rng.normal(size=(3, 2)), rng.normal(size=4)] for _ in range(steps)]
    return params, grads


def _run(optimizer: Optimizer, params: list[np.ndarray], grads: list[list[np.ndarray]]) -> None:
    for step_grads in grads:
        optimizer.step(params, [g.copy() for g in step_grads])


@pytest.mark.parametrize(("name", "config", "reference"), CASES, ids=IDS)
def test_updates_match_the_torch_formulas(
    name: str, config: dict[str, object], reference: Reference
) -> None:
    params, grads = _problem()
    flat = [float(x) for p in params for x in p.ravel()]
    flat_grads = [[float(x) for g in step for x in g.ravel()] for step in grads]
    expected = reference(flat, flat_grads)

    optimizer = make_optimizer({"optimizer_type": name, **config})
    _run(optimizer, params, grads)

    got = np.concatenate([p.ravel() for p in params])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    assert optimizer.step_count == len(grads)


def test_adam_first_step_moves_each_parameter_by_the_learning_rate() -> None:
    # With bias correction, m_hat / sqrt(v_hat) = g / |g| on step 1: a known closed form.
    p = np.array([1.0, -2.0, 3.0])
    Adam(0.1, eps=0.0).step([p], [np.array([0.5, -4.0, 1e-3])])
    np.testing.assert_allclose(p, [0.9, -1.9, 2.9], rtol=1e-15)


def test_step_leaves_gradients_untouched() -> None:
    params, grads = _problem(steps=1)
    before = [g.copy() for g in grads[0]]
    SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.1).step(params, grads[0])
    for g, b in zip(grads[0], before, strict=True):
        np.testing.assert_array_equal(g, b)


@pytest.mark.parametrize(("name", "config", "reference"), CASES, ids=IDS)
def test_state_dict_roundtrip_continues_identically(
    name: str, config: dict[str, object], reference: Reference, tmp_path: Path
) -> None:
    params, grads = _problem(steps=6)
    uninterrupted = [p.copy() for p in params]
    make_run = make_optimizer({"optimizer_type": name, **config})
    _run(make_run, uninterrupted, grads)

    first = make_optimizer({"optimizer_type": name, **config})
    resumed = [p.copy() for p in params]
    _run(first, resumed, grads[:3])
    # Through an .npz, as checkpoints store it: scalars come back as 0-d arrays.
    path = tmp_path / "opt.npz"
    np.savez(path, **{k: np.asarray(v) for k, v in first.state_dict().items()})
    with np.load(path, allow_pickle=False) as data:
        state = {k: data[k] for k in data.files}
    second = make_optimizer({"optimizer_type": name, **config})
    second.load_state_dict(state)
    _run(second, resumed, grads[3:])

    for a, b in zip(resumed, uninterrupted, strict=True):
        np.testing.assert_array_equal(a, b)
    assert second.step_count == 6


def test_state_dict_restores_the_learning_rate_and_hyperparameters() -> None:
    saved = Adam(0.05, beta1=0.8)
    saved.step([np.zeros(2)], [np.ones(2)])
    fresh = Adam(0.001)
    fresh.load_state_dict(saved.state_dict())
    assert fresh.learning_rate == 0.05
    assert fresh.hyperparams["beta1"] == 0.8
    assert fresh.step_count == 1


def test_state_from_a_different_optimizer_is_refused() -> None:
    adam = Adam(0.1)
    adam.step([np.zeros(2)], [np.ones(2)])
    with pytest.raises(ModelError) as info:
        SGD(0.1).load_state_dict(adam.state_dict())
    assert str(info.value) == (
        "The optimizer state lacks momentum, so it was not saved by a 'sgd' optimizer."
    )


def test_state_for_other_parameter_shapes_is_refused_on_the_next_step() -> None:
    saved = Adam(0.1)
    saved.step([np.zeros(2)], [np.ones(2)])
    other = Adam(0.1)
    other.load_state_dict(saved.state_dict())
    with pytest.raises(ModelError) as info:
        other.step([np.zeros(3)], [np.ones(3)])
    assert str(info.value) == (
        "The optimizer state holds 'exp_avg' buffers of shapes [(2,)], but the parameters have "
        "shapes [(3,)]; the state was saved for a different model."
    )


def test_make_optimizer_defaults_to_adam_with_lr_0_001() -> None:
    optimizer = make_optimizer(None)
    assert isinstance(optimizer, Adam)
    assert optimizer.config == {
        "optimizer_type": "adam",
        "learning_rate": 0.001,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "weight_decay": 0.0,
    }


def test_config_rebuilds_the_same_optimizer() -> None:
    for cls in (SGD, Adam, AdamW, RMSprop):
        original = cls(0.01)
        rebuilt = make_optimizer(original.config)
        assert type(rebuilt) is cls
        assert rebuilt.config == original.config
    nesterov = make_optimizer({"optimizer_type": "sgd", "momentum": 0.9, "nesterov": True})
    assert make_optimizer(nesterov.config).config == nesterov.config
    assert set(OPTIMIZERS) == {"sgd", "adam", "adamw", "rmsprop"}


def test_optimizer_names_are_case_insensitive() -> None:
    assert isinstance(make_optimizer({"optimizer_type": "AdamW"}), AdamW)


def test_unknown_optimizer_lists_the_supported_ones() -> None:
    with pytest.raises(ModelError) as info:
        make_optimizer({"optimizer_type": "lbfgs"})
    assert str(info.value) == (
        "Unknown optimizer 'lbfgs'. Supported optimizers: adam, adamw, rmsprop, sgd."
    )


def test_unknown_hyperparameter_names_it_and_the_accepted_ones() -> None:
    with pytest.raises(ModelError) as info:
        make_optimizer({"optimizer_type": "adam", "beta_1": 0.9})
    assert str(info.value) == (
        "Unknown hyperparameter 'beta_1' for optimizer 'adam'. Did you mean 'beta1'? Accepted: "
        "learning_rate, optimizer_type, beta1, beta2, eps, weight_decay."
    )
    with pytest.raises(ModelError) as info:
        make_optimizer({"optimizer_type": "sgd", "betas": [0.9, 0.99]})
    assert str(info.value) == (
        "Unknown hyperparameter 'betas' for optimizer 'sgd'. Accepted: learning_rate, "
        "optimizer_type, momentum, nesterov, weight_decay."
    )


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan"), float("inf"), "fast", True])
def test_learning_rate_must_be_positive(lr: object) -> None:
    with pytest.raises(ModelError) as info:
        make_optimizer({"learning_rate": lr})
    assert str(info.value) == (
        f"The learning rate must be a positive number, e.g. 0.001. Got {lr!r}."
    )


def test_hyperparameter_ranges_are_checked() -> None:
    with pytest.raises(ModelError) as info:
        make_optimizer({"optimizer_type": "adam", "beta2": 1.0})
    assert str(info.value) == (
        "The 'beta2' hyperparameter of optimizer 'adam' must be a number of at least 0 and "
        "less than 1. Got 1.0 instead."
    )
    with pytest.raises(ModelError) as info:
        make_optimizer({"optimizer_type": "sgd", "weight_decay": "a lot"})
    assert str(info.value) == (
        "The 'weight_decay' hyperparameter of optimizer 'sgd' must be a number. "
        "Got 'a lot' instead."
    )
    with pytest.raises(ModelError) as info:
        SGD(0.1, nesterov=True)
    assert str(info.value) == (
        "Nesterov momentum needs a momentum above 0; set 'momentum', e.g. 0.9."
    )
