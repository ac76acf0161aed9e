"""LinearRegression: closed form against scikit-learn, gradient descent against the closed form."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression as SklearnLinearRegression
from sklearn.linear_model import Ridge

from mlharness.errors import ModelError
from mlharness.tabular.linear import LinearRegression


def _data(
    n: int = 500, d: int = 8, seed: int = 0, shift: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d) + shift
    y = X @ rng.normal(size=d) + 2.5 + 0.1 * rng.normal(size=n)
    return X, y


def _objective(model: LinearRegression, X: np.ndarray, y: np.ndarray) -> float:
    r = X @ model.coef_ + model.intercept_ - y
    return float(np.mean(r**2) + model.l2_regularization * model.coef_ @ model.coef_)


class TestLinearRegressionClosedForm:
    def test_matches_sklearn_linear_regression(self) -> None:
        X, y = _data()
        model = LinearRegression()
        model.train_step(X, y)
        reference = SklearnLinearRegression().fit(X, y)
        np.testing.assert_allclose(model.coef_, reference.coef_, rtol=0, atol=1e-8)
        assert model.intercept_ == pytest.approx(reference.intercept_, abs=1e-8)
        np.testing.assert_allclose(model.predict(X), reference.predict(X), atol=1e-8)

    @pytest.mark.parametrize("l2", [1e-3, 0.1, 2.0])
    def test_matches_sklearn_ridge_with_alpha_n_times_l2(self, l2: float) -> None:
        X, y = _data()
        model = LinearRegression(l2_regularization=l2)
        model.train_step(X, y)
        reference = Ridge(alpha=len(y) * l2).fit(X, y)
        np.testing.assert_allclose(model.coef_, reference.coef_, rtol=0, atol=1e-8)
        assert model.intercept_ == pytest.approx(reference.intercept_, abs=1e-8)

    @pytest.mark.parametrize("shift", [50.0, 1e4])
    def test_large_feature_means_keep_full_precision(self, shift: float) -> None:
        X, y = _data(shift=shift)
        model = LinearRegression(l2_regularization=0.01)
        model.train_step(X, y)
        reference = Ridge(alpha=len(y) * 0.01).fit(X, y)
        np.testing.assert_allclose(model.coef_, reference.coef_, rtol=0, atol=1e-8)
        assert model.intercept_ == pytest.approx(reference.intercept_, rel=1e-10)

    def test_returns_the_objective_at_the_solution(self) -> None:
        X, y = _data()
        model = LinearRegression(l2_regularization=0.05)
        out = model.train_step(X, y)
        assert out["loss"] == pytest.approx(_objective(model, X, y), rel=1e-12)
        assert model.loss(X, y) == pytest.approx(out["loss"], rel=1e-12)

    def test_is_a_minimum_of_the_objective(self) -> None:
        X, y = _data()
        model = LinearRegression(l2_regularization=0.05)
        model.train_step(X, y)
        best = _objective(model, X, y)
        rng = np.random.default_rng(1)
        for _ in range(5):
            model._theta += 1e-3 * rng.normal(size=model._theta.shape)  # type: ignore[operator]
            assert _objective(model, X, y) > best
            model.train_step(X, y)

    def test_singular_matrix_warns_with_condition_number_and_uses_pseudo_inverse(self) -> None:
        X, y = _data(d=4)
        X = np.column_stack([X, X[:, 0]])  # a duplicated column: X^T X is singular
        model = LinearRegression()
        with pytest.warns(UserWarning) as record:
            model.train_step(X, y)
        assert len(record) == 1
        message = str(record[0].message)
        assert message.startswith("The feature matrix is singular or nearly so (condition number ")
        cond = float(message.split("condition number ")[1].split(")")[0])
        assert cond > 1e10
        assert message.endswith(
            "the closed-form solution is not unique; the pseudo-inverse (minimum-norm) solution "
            "was used. Add l2_regularization or remove collinear features."
        )
        # The minimum-norm least-squares solution, as scikit-learn's lstsq-based fit gives.
        reference = SklearnLinearRegression().fit(X, y)
        np.testing.assert_allclose(model.coef_, reference.coef_, atol=1e-8)
        assert model.coef_[0] == pytest.approx(model.coef_[-1], abs=1e-8)  # weight split evenly
        assert np.isfinite(model.predict(X)).all()

    def test_more_features_than_samples_still_fits(self) -> None:
        X, y = _data(n=5, d=10)
        model = LinearRegression()
        with pytest.warns(UserWarning, match="condition number"):
            model.train_step(X, y)
        np.testing.assert_allclose(model.predict(X), y, atol=1e-8)  # interpolates

    def test_regularisation_removes_the_singularity_warning(self) -> None:
        X, y = _data(d=4)
        X = np.column_stack([X, X[:, 0]])
        model = LinearRegression(l2_regularization=0.01)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.train_step(X, y)
        reference = Ridge(alpha=len(y) * 0.01).fit(X, y)
        np.testing.assert_allclose(model.coef_, reference.coef_, atol=1e-8)

    def test_ill_conditioned_but_regular_matrix_is_solved_accurately_without_warning(
        self,
    ) -> None:
        X, y = _data(d=4)
        X = np.column_stack([X, X[:, 0] + 1e-7 * np.random.default_rng(3).normal(size=len(X))])
        model = LinearRegression()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.train_step(X, y)
        # cond(X) ~ 4e7: the normal equations would square that past float64's reach, so this
        # must come from the SVD path. Reference: an SVD least-squares fit with an intercept
        # column (scikit-learn's LinearRegression truncates here and fits worse).
        design = np.column_stack([np.ones(len(X)), X])
        reference, *_ = np.linalg.lstsq(design, y, rcond=None)
        np.testing.assert_allclose(model.coef_, reference[1:], rtol=1e-6)
        np.testing.assert_allclose(model.predict(X), design @ reference, atol=1e-8)

    def test_is_deterministic_and_not_iterative(self) -> None:
        X, y = _data()
        a, b = LinearRegression(seed=1), LinearRegression(seed=2)
        a.train_step(X, y)
        b.train_step(X, y)
        np.testing.assert_array_equal(a.coef_, b.coef_)
        assert a.is_iterative is False
        assert a.task == "regression"

    def test_accepts_column_vector_targets(self) -> None:
        X, y = _data()
        a, b = LinearRegression(), LinearRegression()
        a.train_step(X, y)
        b.train_step(X, y[:, None])
        np.testing.assert_array_equal(a.coef_, b.coef_)

    def test_bad_targets_are_refused(self) -> None:
        X, y = _data()
        model = LinearRegression()
        with pytest.raises(ModelError) as info:
            model.train_step(X, y[:-1])
        assert str(info.value) == "X has 500 rows but y has 499; they must match."
        with pytest.raises(ModelError) as info:
            model.train_step(X, np.column_stack([y, y]))
        assert str(info.value) == (
            "y must be a 1-D array of shape (n_samples,) for linear regression, but it has "
            "shape (500, 2)."
        )
        y_nan = y.copy()
        y_nan[3] = np.nan
        with pytest.raises(ModelError) as info:
            model.train_step(X, y_nan)
        assert str(info.value) == "y contains NaN or infinite values; remove those samples first."

    @pytest.mark.parametrize(
        ("l2", "problem"),
        [
            (-0.1, "Input should be greater than or equal to 0 (got -0.1)"),
            (float("nan"), "Input should be a finite number (got nan)"),
            (float("inf"), "Input should be a finite number (got inf)"),
            ("0.1", "Input should be a valid number (got '0.1')"),
            (True, "Input should be a valid number (got True)"),
        ],
    )
    @pytest.mark.parametrize("first_use", ["train_step", "fit", "save", "hyperparameters"])
    def test_invalid_regularisation_is_refused_at_first_use(
        self, l2: object, problem: str, first_use: str, tmp_path: Path
    ) -> None:
        # The constructor only stores; the config schema's rule (LinearRegressionParams)
        # checks the argument once, when the model is first used.
        model = LinearRegression(l2_regularization=l2)  # type: ignore[arg-type]
        X, y = _data(n=20, d=2)
        uses = {
            "train_step": lambda: model.train_step(X, y),
            "fit": lambda: model.fit(X, y),
            "save": lambda: model.save(tmp_path / "m"),
            "hyperparameters": lambda: model.hyperparameters,
        }
        with pytest.raises(ModelError) as info:
            uses[first_use]()
        assert str(info.value) == (
            f"LinearRegression: Invalid value for 'l2_regularization': {problem}."
        )

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            (
                {"use_gradient_descent": "yes"},
                "LinearRegression: Invalid value for 'use_gradient_descent': Input should be a "
                "valid boolean (got 'yes').",
            ),
            (
                {"seed": 1.5},
                "LinearRegression: Invalid value for 'seed': Input should be a valid integer "
                "(got 1.5).",
            ),
            (
                {"optimizer_config": {"optimizer_type": "adagrad"}},
                "Unknown optimizer 'adagrad'. Supported optimizers: adam, adamw, rmsprop, sgd.",
            ),
        ],
    )
    def test_other_invalid_arguments_are_refused(
        self, kwargs: dict[str, object], message: str
    ) -> None:
        X, y = _data(n=20, d=2)
        with pytest.raises(ModelError) as info:
            LinearRegression(**kwargs).train_step(X, y)  # type: ignore[arg-type]
        assert str(info.value) == message

    def test_untrained_model_cannot_predict(self) -> None:
        with pytest.raises(ModelError) as info:
            LinearRegression().predict(np.ones((2, 3)))
        assert str(info.value) == (
            "This LinearRegression has not been trained yet; call train_step(X, y) or "
            "load(path) first."
        )


def test_fit_is_the_closed_form_whatever_the_solver_setting() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0]) + 1.5
    gd_model = LinearRegression(use_gradient_descent=True, l2_regularization=0.01)
    assert gd_model.fit(X, y) is gd_model
    reference = Ridge(alpha=0.01 * len(y)).fit(X, y)
    np.testing.assert_allclose(gd_model.coef_, reference.coef_, atol=1e-10)
    closed = LinearRegression(l2_regularization=0.01)
    assert closed.train_step(X, y)["loss"] == pytest.approx(gd_model.loss(X, y))
    with pytest.raises(ModelError, match="y contains NaN or infinite values"):
        LinearRegression().fit(X, np.full(200, np.nan))


class TestLinearRegressionGradientDescent:
    def _train(
        self, seed: int = 0, epochs: int = 60, l2: float = 0.0, lr: float = 0.05
    ) -> LinearRegression:
        X, y = _data(n=400, d=5)
        model = LinearRegression(
            seed=seed,
            use_gradient_descent=True,
            l2_regularization=l2,
            optimizer_config={"optimizer_type": "sgd", "learning_rate": lr, "momentum": 0.9},
        )
        rng = np.random.default_rng(seed)
        for _ in range(epochs):
            order = rng.permutation(len(y))
            for start in range(0, len(y), 32):
                idx = order[start : start + 32]
                model.train_step(X[idx], y[idx])
        return model

    @pytest.mark.parametrize("l2", [0.0, 0.05])
    def test_converges_to_the_closed_form_solution(self, l2: float) -> None:
        X, y = _data(n=400, d=5)
        exact = LinearRegression(l2_regularization=l2)
        exact.train_step(X, y)
        # Full-batch descent on the same objective reaches the same minimum.
        model = LinearRegression(
            seed=0,
            use_gradient_descent=True,
            l2_regularization=l2,
            optimizer_config={"optimizer_type": "sgd", "learning_rate": 0.05, "momentum": 0.9},
        )
        for _ in range(1500):
            model.train_step(X, y)
        np.testing.assert_allclose(model.coef_, exact.coef_, atol=1e-6)
        assert model.intercept_ == pytest.approx(exact.intercept_, abs=1e-6)
        # Mini-batches with adam get close too.
        minibatch = self._train(l2=l2)
        np.testing.assert_allclose(minibatch.coef_, exact.coef_, atol=0.05)

    def test_gradient_matches_finite_differences(self) -> None:
        X, y = _data(n=50, d=4)
        model = LinearRegression(seed=0, use_gradient_descent=True, l2_regularization=0.3)
        model._init_parameters(4)
        loss, grad = model._gradients(X, y)
        assert loss == pytest.approx(_objective(model, X, y), rel=1e-12)
        grad = grad.copy()
        theta = model._theta
        assert theta is not None
        numeric = np.empty_like(theta)
        for i in range(len(theta)):
            old = theta[i]
            theta[i] = old + 1e-6
            up = _objective(model, X, y)
            theta[i] = old - 1e-6
            down = _objective(model, X, y)
            theta[i] = old
            numeric[i] = (up - down) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)

    def test_train_step_returns_the_batch_loss_before_the_update(self) -> None:
        X, y = _data(n=64, d=3)
        model = LinearRegression(seed=0, use_gradient_descent=True)
        model.train_step(X, y)
        before = _objective(model, X, y)
        assert model.train_step(X, y)["loss"] == pytest.approx(before, rel=1e-12)
        assert _objective(model, X, y) < before
        assert model.is_iterative is True

    def test_same_seed_gives_identical_weights(self) -> None:
        a, b = self._train(seed=7, epochs=3), self._train(seed=7, epochs=3)
        np.testing.assert_array_equal(a.coef_, b.coef_)
        assert a.intercept_ == b.intercept_
        c = self._train(seed=8, epochs=3)
        assert not np.array_equal(a.coef_, c.coef_)

    def test_feature_count_cannot_change_between_batches(self) -> None:
        model = LinearRegression(use_gradient_descent=True)
        model.train_step(np.ones((4, 3)), np.ones(4))
        with pytest.raises(ModelError) as info:
            model.train_step(np.ones((4, 2)), np.ones(4))
        assert str(info.value) == "X has 2 features but the model was built for 3."

    def test_save_and_load_resume_identically(self, tmp_path: Path) -> None:
        X, y = _data(n=64, d=3)
        config = {"optimizer_type": "adam", "learning_rate": 0.05}
        straight = LinearRegression(seed=0, use_gradient_descent=True, optimizer_config=config)
        for _ in range(10):
            straight.train_step(X, y)

        first = LinearRegression(seed=0, use_gradient_descent=True, optimizer_config=config)
        for _ in range(5):
            first.train_step(X, y)
        first.save(tmp_path / "ckpt")
        second = LinearRegression(seed=99, use_gradient_descent=True, optimizer_config=config)
        second.load(tmp_path / "ckpt")
        for _ in range(5):
            second.train_step(X, y)
        np.testing.assert_array_equal(second.coef_, straight.coef_)
        assert second.intercept_ == straight.intercept_

    def test_loading_a_checkpoint_with_other_feature_count_names_both(self, tmp_path: Path) -> None:
        small = LinearRegression(use_gradient_descent=True)
        small.train_step(np.ones((4, 5)), np.ones(4))
        small.save(tmp_path / "five")
        big = LinearRegression(use_gradient_descent=True)
        big.train_step(np.ones((4, 10)), np.ones(4))
        before = big.coef_.copy()
        with pytest.raises(ModelError) as info:
            big.load(tmp_path / "five")
        assert str(info.value) == (
            f"Cannot load checkpoint '{tmp_path / 'five'}': it holds a LinearRegression with 5 "
            "features, but this model has 10 features."
        )
        np.testing.assert_array_equal(big.coef_, before)
