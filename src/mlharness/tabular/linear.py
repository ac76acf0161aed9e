"""Linear regression, fitted in closed form (ridge normal equations) or by gradient descent.

Both solvers minimise the same objective, so switching ``use_gradient_descent`` changes how
the minimum is found, not where it is:

    J(w, b) = mean((X w + b - y)^2) + l2_regularization * ||w||^2      (b is not penalised)

Setting the gradient to zero gives, with centred data Xc = X - mean(X), yc = y - mean(y),

    (Xc^T Xc + n * l2_regularization * I) w = Xc^T yc,    b = mean(y) - mean(X) . w

which is scikit-learn's ``Ridge(alpha=n * l2_regularization)`` (and ``LinearRegression``
for l2_regularization = 0).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np

from mlharness.errors import ModelError
from mlharness.tabular.base import (
    BaseModel,
    Task,
    check_features,
    checked_params,
    copy_weights,
    read_checkpoint,
    restore_optimizer,
    write_checkpoint,
)
from mlharness.tabular.config import LinearRegressionParams
from mlharness.tabular.optim import Optimizer, make_optimizer

# Beyond this condition number of the (centred, regularised) feature matrix the normal
# equations square it past what float64 resolves, so the closed form switches to an SVD
# least-squares solve (accurate up to ~1e15)...
_NORMAL_EQUATIONS_MAX_COND = 1e6
# ...and beyond this one the matrix is singular for practical purposes: warn, and let the
# pseudo-inverse pick the minimum-norm solution among the many that fit equally well.
_SINGULAR_COND = 1e10
# When the column means dwarf the spread, G - n * mu mu^T cancels most digits of G; past this
# ratio of raw to centred sums of squares the data is centred explicitly instead.
_MAX_CANCELLATION = 1e3


class LinearRegression(BaseModel):
    """Least-squares linear regression with an optional L2 (ridge) penalty.

    Learned state, once trained: ``coef_`` (n_features,) and ``intercept_`` (float).
    """

    name = "linear_regression"

    def __init__(
        self,
        seed: int | None = None,
        use_gradient_descent: bool = False,
        l2_regularization: float = 0.0,
        optimizer_config: dict[str, Any] | None = None,
    ) -> None:
        # Only stored (scikit-learn's rule): a config's values were checked when it loaded,
        # a Python caller's are checked by the same rules at first use (see _ready).
        self.seed = seed
        self.use_gradient_descent = use_gradient_descent
        self.l2_regularization = l2_regularization
        self.optimizer_config = optimizer_config
        self.optimizer: Optimizer | None = None  # gradient descent's, once built
        self._built = False
        # [w_1, ..., w_d, b] in one array, so gradient descent updates it with one optimizer
        # call; None until the first train_step (or load) reveals the feature count.
        self._theta: np.ndarray | None = None
        self._grad: np.ndarray | None = None

    @classmethod
    def from_params(
        cls,
        params: LinearRegressionParams,
        *,
        seed: int | None,
        optimizer_config: dict[str, Any] | None,
    ) -> LinearRegression:
        """The model of a validated config, built at once: its parameters are not checked
        a second time."""
        model = cls(seed, params.use_gradient_descent, params.l2_regularization, optimizer_config)
        model._build(params)
        return model

    def _ready(self) -> None:
        """Check the arguments by the config schema's rules and build, on first use."""
        if not self._built:
            names = ("seed", "use_gradient_descent", "l2_regularization")
            values = {name: getattr(self, name) for name in names}
            self._build(checked_params(LinearRegressionParams, "LinearRegression", values))

    def _build(self, params: LinearRegressionParams) -> None:
        self.use_gradient_descent = params.use_gradient_descent
        self.l2_regularization = params.l2_regularization
        # Built even for the closed form, so a bad optimizer config fails on first use either way.
        optimizer = make_optimizer(self.optimizer_config)
        self.optimizer = optimizer if self.use_gradient_descent else None
        self._built = True

    # ------------------------------------------------------------------ contract

    @property
    def task(self) -> Task:
        return "regression"

    @property
    def is_iterative(self) -> bool:
        self._ready()
        return self.use_gradient_descent

    @property
    def n_features_in_(self) -> int | None:
        return None if self._theta is None else len(self._theta) - 1

    @property
    def coef_(self) -> np.ndarray:
        return self._trained_theta()[:-1]

    @property
    def intercept_(self) -> float:
        return float(self._trained_theta()[-1])

    @property
    def hyperparameters(self) -> dict[str, Any]:
        self._ready()
        return {
            "seed": self.seed,
            "use_gradient_descent": self.use_gradient_descent,
            "l2_regularization": self.l2_regularization,
        }

    def _trained_theta(self) -> np.ndarray:
        if self._theta is None:
            raise ModelError(
                "This LinearRegression has not been trained yet; call train_step(X, y) or "
                "load(path) first."
            )
        return self._theta

    def forward(self, X: np.ndarray) -> np.ndarray:
        theta = self._trained_theta()
        out: np.ndarray = X @ theta[:-1]  # (n,)
        out += theta[-1]
        return out

    def loss(self, X: np.ndarray, y: np.ndarray) -> float:
        self._ready()
        X = check_features(X, self.n_features_in_)
        y = _targets(y, len(X))
        theta = self._trained_theta()
        w = theta[:-1]
        residual = self.forward(X) - y
        return float(residual @ residual / len(y) + self.l2_regularization * (w @ w))

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearRegression:
        """Solve for the exact minimiser of J on (X, y) in closed form; returns ``self``."""
        self._ready()
        X = check_features(X, None)
        y = _targets(y, len(X))
        if not np.isfinite(y).all():
            raise ModelError("y contains NaN or infinite values; remove those samples first.")
        self._theta = _ridge_closed_form(X, y, self.l2_regularization)
        return self

    def train_step(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Closed form: fit on this (whole) training set; the loss returned is the fitted one.

        Gradient descent: one optimizer step on this batch; the loss returned is the batch
        objective *before* the step (it comes free with the gradient).
        """
        self._ready()
        if not self.use_gradient_descent:
            self.fit(X, y)
            return {"loss": self.loss(X, y)}

        y = _targets(y, len(X))
        if self._theta is None:
            self._init_parameters(X.shape[1])
        elif X.shape[1] != len(self._theta) - 1:
            raise ModelError(
                f"X has {X.shape[1]} features but the model was built for {len(self._theta) - 1}."
            )
        loss, grad = self._gradients(X, y)
        assert self.optimizer is not None and self._theta is not None
        self.optimizer.step([self._theta], [grad])
        return {"loss": loss}

    # ------------------------------------------------------------------ gradient descent

    def _init_parameters(self, n_features: int) -> None:
        """Small random weights from ``seed`` (reproducible), zero intercept."""
        rng = np.random.default_rng(self.seed)
        self._theta = np.zeros(n_features + 1)
        self._theta[:-1] = rng.normal(0.0, 0.01, size=n_features)
        self._grad = np.empty(n_features + 1)

    def _gradients(self, X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """J on this batch and its gradient [dJ/dw, dJ/db], without updating anything."""
        assert self._theta is not None and self._grad is not None
        n = len(y)
        w, b = self._theta[:-1], self._theta[-1]
        r = X @ w  # (n,) residual X w + b - y
        r += b - y
        lam = self.l2_regularization
        loss = float(r @ r / n + lam * (w @ w))
        dw = self._grad[:-1]
        np.matmul(r, X, out=dw)  # 2/n X^T r + 2 lam w
        dw *= 2.0 / n
        if lam:
            dw += (2.0 * lam) * w
        self._grad[-1] = 2.0 * r.sum() / n
        return loss, self._grad

    # ------------------------------------------------------------------ checkpoints

    def _weights(self) -> dict[str, np.ndarray]:
        theta = self._trained_theta()
        return {"coef": theta[:-1], "intercept": theta[-1:].reshape(())}

    def save(self, path: str | os.PathLike[str]) -> None:
        self._ready()
        write_checkpoint(
            path,
            model=self.name,
            hyperparameters=self.hyperparameters,
            optimizer_config=(
                self.optimizer.config if self.optimizer else dict(self.optimizer_config or {})
            ),
            weights=self._weights(),
            optimizer_state=self.optimizer.state_dict() if self.optimizer else None,
        )

    def load(self, path: str | os.PathLike[str]) -> None:
        """Load a checkpoint's weights; this model keeps its own solver settings.

        The optimizer state is restored too when the checkpoint used the same optimizer type,
        so gradient descent resumes exactly where it stopped.
        """
        checkpoint = read_checkpoint(path, self.name)
        self._ready()
        n_features = int(np.asarray(checkpoint.weights.get("coef", ())).size)
        if self.n_features_in_ is not None and self.n_features_in_ != n_features:
            raise ModelError(
                f"Cannot load checkpoint '{path}': it holds a LinearRegression with "
                f"{n_features} features, but this model has {self.n_features_in_} features."
            )
        if self._theta is None:
            self._init_parameters(n_features)
        copy_weights(checkpoint, self._weights())
        if self.optimizer is not None:
            restore_optimizer(checkpoint, self.optimizer)


def _targets(y: Any, n_samples: int) -> np.ndarray:
    """y as a float (n,) array; (n, 1) is accepted because many loaders produce it."""
    array: np.ndarray = np.asarray(y, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ModelError(
            "y must be a 1-D array of shape (n_samples,) for linear regression, but it has "
            f"shape {array.shape}."
        )
    if len(array) != n_samples:
        raise ModelError(f"X has {n_samples} rows but y has {len(array)}; they must match.")
    return array


def _ridge_closed_form(X: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """[w, b] minimising J, from the Gram matrix (one pass of X^T X, no centred copy of X)."""
    n, d = X.shape
    y_mean = float(y.mean())
    yc = y - y_mean
    # One BLAS pass gives the column sums and X^T yc, which equals Xc^T yc because yc sums to 0.
    sums_xty = X.T @ np.column_stack((np.ones(n), yc))  # (d, 2)
    mu = sums_xty[:, 0] / n
    xty = sums_xty[:, 1]
    gram = X.T @ X  # (d, d); NumPy uses a symmetric rank-k update for X.T @ X
    centred_ss = np.diag(gram) - n * mu * mu  # n * var of each column
    if np.any(np.diag(gram) > _MAX_CANCELLATION * np.maximum(centred_ss, 1e-300)):
        # Large means: subtracting n mu mu^T would cancel too many digits. Pay for the copy.
        Xc = X - mu
        gram = Xc.T @ Xc
        xty = Xc.T @ yc
    else:
        gram -= n * np.outer(mu, mu)
    a = gram
    a[np.diag_indices(d)] += n * l2

    # cond(Xc) = sqrt(cond(Xc^T Xc)); eigvalsh of a d x d matrix costs ~1 ms.
    eig = np.linalg.eigvalsh(a)
    cond = math.sqrt(eig[-1] / eig[0]) if eig[0] > 0 else math.inf
    w: np.ndarray | None = None
    if cond < _NORMAL_EQUATIONS_MAX_COND:
        try:
            w = np.linalg.solve(a, xty)
        except np.linalg.LinAlgError:
            w = None
    if w is None:
        w = _ridge_lstsq(X - mu, yc, l2)
    intercept = y_mean - float(mu @ w)
    return np.append(w, intercept)


def _ridge_lstsq(Xc: np.ndarray, yc: np.ndarray, l2: float) -> np.ndarray:
    """Solve the centred ridge problem by SVD; warn when the matrix is (nearly) singular.

    The ridge penalty is the least-squares problem [Xc; sqrt(n l2) I] w = [yc; 0].
    """
    n, d = Xc.shape
    if l2:
        Xc = np.vstack((Xc, math.sqrt(n * l2) * np.eye(d)))
        yc = np.concatenate((yc, np.zeros(d)))
    w, _, _, s = np.linalg.lstsq(Xc, yc, rcond=None)  # s: singular values, largest first
    cond = float(s[0] / s[-1]) if len(s) == d and s[-1] > 0 else math.inf
    if cond > _SINGULAR_COND:
        warnings.warn(
            f"The feature matrix is singular or nearly so (condition number {cond:.3g}), so "
            "the closed-form solution is not unique; the pseudo-inverse (minimum-norm) "
            "solution was used. Add l2_regularization or remove collinear features.",
            UserWarning,
            stacklevel=3,
        )
    return np.asarray(w)
