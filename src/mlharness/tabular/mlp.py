"""A fully connected network in NumPy with hand-written backpropagation.

Reading order: activations (each forward beside its backward), output losses (each with
its gradient), then the model. Shapes: n samples, d_in/d_out a layer's fan-in/fan-out,
k outputs.

Speed: ``train_step`` runs once per mini-batch and a small network spends as long in Python
call overhead as in arithmetic, so the hot path makes few NumPy calls, works in place, and
keeps every parameter as a view into one flat array: gradient clipping, the optimizer step
and weight clipping are then one call each, whatever the depth. Inputs are not validated
there (``predict`` and ``loss`` validate); ``train_step`` trusts the training loop.

Safeguards (seed 000): gradients and weights are clipped to [-10, 10] on every step, tanh and
sigmoid pre-activations to [-30, 30] so ``exp`` never overflows, and a learning rate above
1.0 warns that training may diverge.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from itertools import pairwise
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
from mlharness.tabular.config import MLPParams
from mlharness.tabular.optim import Optimizer, make_optimizer

CLIP = 10.0  # bound on every gradient and weight
PREACTIVATION_CLIP = 30.0  # sigmoid(30) = 1 - 9e-14; exp(30) is far from overflow


# ----------------------------------------------------------------------------- activations
# Forward functions overwrite the pre-activation z with the activation a. Backward functions
# turn dL/da into dL/dz in place, from a alone, so the forward pass keeps one array per layer.
# (For tanh and sigmoid the derivative ignores the clip: at |z| >= 30 it is below 1e-13.)


def relu(z: np.ndarray) -> None:
    np.maximum(z, 0.0, out=z)


def relu_backward(grad: np.ndarray, a: np.ndarray) -> None:
    grad *= a > 0.0


def tanh(z: np.ndarray) -> None:
    np.clip(z, -PREACTIVATION_CLIP, PREACTIVATION_CLIP, out=z)
    np.tanh(z, out=z)


def tanh_backward(grad: np.ndarray, a: np.ndarray) -> None:
    grad *= 1.0 - a * a


def sigmoid(z: np.ndarray) -> None:
    np.clip(z, -PREACTIVATION_CLIP, PREACTIVATION_CLIP, out=z)
    np.negative(z, out=z)  # 1 / (1 + exp(-z))
    np.exp(z, out=z)
    z += 1.0
    np.reciprocal(z, out=z)


def sigmoid_backward(grad: np.ndarray, a: np.ndarray) -> None:
    grad *= a * (1.0 - a)


Activation = tuple[Callable[[np.ndarray], None], Callable[[np.ndarray, np.ndarray], None]]
ACTIVATIONS: dict[str, Activation] = {
    "relu": (relu, relu_backward),
    "tanh": (tanh, tanh_backward),
    "sigmoid": (sigmoid, sigmoid_backward),
}


# ----------------------------------------------------------------------------- output losses
# Each takes the logits z (n, k) of the last layer and the targets, and returns the mean loss
# and dL/dz, computed in place in z (the logits are not needed afterwards).


def mse_loss(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean squared error over all n * k outputs; y is (n, k)."""
    z -= y  # residual
    loss = float(np.vdot(z, z)) / z.size
    z *= 2.0 / z.size
    return loss, z


def binary_cross_entropy(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean binary cross-entropy of sigmoid(z) against y in {0, 1}, (n, k), from the logits.

    log(1 + exp(-|z|)) never overflows, unlike log(sigmoid(z)) computed naively.
    """
    softplus = np.abs(z)
    np.negative(softplus, out=softplus)
    np.exp(softplus, out=softplus)
    np.log1p(softplus, out=softplus)
    loss = (float(np.maximum(z, 0.0).sum()) - float(np.vdot(z, y)) + float(softplus.sum())) / z.size
    sigmoid(z)
    z -= y
    z *= 1.0 / z.size
    return loss, z


def cross_entropy(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean categorical cross-entropy of softmax(z); y holds class indices (n,) or one-hot /
    probability rows (n, k). Stable through log-sum-exp: z is shifted by its row maximum,
    so exp never overflows and the loss is log(sum(exp(z))) - z[y]."""
    n, k = z.shape
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)  # (n, k), normalised to softmax(z) below
    total = p.sum(axis=1, keepdims=True)  # (n, 1)
    p /= total
    log_total = np.log(total, out=total)
    if y.ndim == 1:
        picked = np.arange(0, n * k, k)  # flat index of each row's true class
        picked += y
        loss = (float(log_total.sum()) - float(z.take(picked).sum())) / n
        p.reshape(-1)[picked] -= 1.0  # softmax(z) - onehot(y)
    else:
        loss = (float(log_total.sum()) - float(np.vdot(z, y))) / n
        p -= y
    p *= 1.0 / n
    return loss, p


def softmax(z: np.ndarray) -> None:
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)


def identity(z: np.ndarray) -> None:
    pass


Output = tuple[
    Callable[[np.ndarray], None], Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]
]
OUTPUTS: dict[str | None, Output] = {
    None: (identity, mse_loss),
    "sigmoid": (sigmoid, binary_cross_entropy),
    "softmax": (softmax, cross_entropy),
}


# ----------------------------------------------------------------------------- the model


class MLP(BaseModel):
    """Multi-layer perceptron: affine layers with ``activation`` between them.

    ``output_activation`` sets the task and the loss: None -> regression with mean squared
    error; "sigmoid" -> binary (or multi-label) classification with binary cross-entropy;
    "softmax" -> multi-class classification with cross-entropy on integer labels.
    ``predict`` returns the activated output: values, probabilities of class 1, or class
    probabilities (n, k).
    """

    name = "mlp"

    def __init__(
        self,
        layer_sizes: Sequence[int],
        activation: str = "relu",
        output_activation: str | None = None,
        seed: int | None = None,
        optimizer_config: dict[str, Any] | None = None,
        init: str = "auto",
    ) -> None:
        # Only stored (scikit-learn's rule): a config's values were checked when it loaded,
        # a Python caller's are checked by the same rules at first use (see _ready).
        self.layer_sizes = layer_sizes
        self.activation = activation
        self.output_activation = output_activation
        self.seed = seed
        self.optimizer_config = optimizer_config
        self.init = init
        self._built = False  # the network and its optimizer exist (see _build)

    @classmethod
    def from_params(
        cls, params: MLPParams, *, seed: int | None, optimizer_config: dict[str, Any] | None
    ) -> MLP:
        """The model of a validated config, built at once: its parameters are not checked
        a second time."""
        model = cls(
            params.layer_sizes,
            params.activation,
            params.output_activation,
            seed,
            optimizer_config,
            params.init,
        )
        model._build(params)
        return model

    def _ready(self) -> None:
        """Check the arguments by the config schema's rules and build, on first use."""
        if not self._built:
            names = ("layer_sizes", "activation", "output_activation", "seed", "init")
            values = {name: getattr(self, name) for name in names}
            self._build(checked_params(MLPParams, "MLP", values))

    def _build(self, params: MLPParams) -> None:
        """The optimizer and the initialised network of checked ``params``."""
        self.layer_sizes = list(params.layer_sizes)
        self.activation = params.activation
        self.output_activation = params.output_activation
        self.init = params.init
        # An MLP always trains by gradient steps: never None, unlike the base class allows.
        self.optimizer: Optimizer = make_optimizer(self.optimizer_config)  # pyright: ignore[reportIncompatibleVariableOverride]
        if self.optimizer.learning_rate > 1.0:
            warnings.warn(
                f"learning_rate {self.optimizer.learning_rate:g} is above 1.0, so training may "
                "diverge (gradients and weights are clipped to [-10, 10], but the loss can "
                "still explode). Try 0.1 or less.",
                UserWarning,
                stacklevel=4,
            )
        self._activate, self._activate_backward = ACTIVATIONS[self.activation]
        self._output, self._output_loss = OUTPUTS[self.output_activation]
        self._allocate()
        self._init_weights()
        self._built = True

    def _allocate(self) -> None:
        """All parameters live in one flat array; weights[i] (d_in, d_out) and biases[i]
        (d_out,) are views into it, and likewise their gradients."""
        shapes = list(pairwise(self.layer_sizes))
        total = sum(i * o + o for i, o in shapes)
        self._params = np.zeros(total)
        self._grads = np.zeros(total)
        self._W: list[np.ndarray] = []
        self._b: list[np.ndarray] = []
        self._dweights: list[np.ndarray] = []
        self._dbiases: list[np.ndarray] = []
        offset = 0
        for d_in, d_out in shapes:
            w_end = offset + d_in * d_out
            b_end = w_end + d_out
            self._W.append(self._params[offset:w_end].reshape(d_in, d_out))
            self._b.append(self._params[w_end:b_end])
            self._dweights.append(self._grads[offset:w_end].reshape(d_in, d_out))
            self._dbiases.append(self._grads[w_end:b_end])
            offset = b_end
        # [dW0, db0, dW1, db1, ...]: the order of the flat array, as _gradients returns them.
        self._grad_views = [
            g for pair in zip(self._dweights, self._dbiases, strict=True) for g in pair
        ]

    @property
    def weights(self) -> list[np.ndarray]:
        """Each layer's weights (d_in, d_out), views into one flat parameter array."""
        self._ready()
        return self._W

    @property
    def biases(self) -> list[np.ndarray]:
        """Each layer's biases (d_out,), views into the same flat array."""
        self._ready()
        return self._b

    def _init_weights(self) -> None:
        """He (std sqrt(2 / d_in)) for relu, Xavier/Glorot (std sqrt(2 / (d_in + d_out)))
        for tanh and sigmoid, so activations keep their scale through depth; biases 0."""
        rule = (
            self.init if self.init != "auto" else ("he" if self.activation == "relu" else "xavier")
        )
        rng = np.random.default_rng(self.seed)
        for W in self._W:
            d_in, d_out = W.shape
            std = np.sqrt(2.0 / d_in) if rule == "he" else np.sqrt(2.0 / (d_in + d_out))
            W[...] = rng.standard_normal((d_in, d_out)) * std

    # ------------------------------------------------------------------ contract

    @property
    def task(self) -> Task:
        self._ready()
        return "regression" if self.output_activation is None else "classification"

    @property
    def n_features_in_(self) -> int:
        self._ready()
        return self.layer_sizes[0]

    @property
    def hyperparameters(self) -> dict[str, Any]:
        self._ready()
        return {
            "layer_sizes": list(self.layer_sizes),
            "activation": self.activation,
            "output_activation": self.output_activation,
            "seed": self.seed,
            "init": self.init,
        }

    def _logits(self, X: np.ndarray) -> np.ndarray:
        """Last layer's output (n, k) before the output activation."""
        self._ready()
        h = X
        for W, b in zip(self._W[:-1], self._b[:-1], strict=True):
            h = h @ W  # (n, d_out)
            h += b
            self._activate(h)
        z: np.ndarray = h @ self._W[-1]  # (n, k)
        z += self._b[-1]
        return z

    def forward(self, X: np.ndarray) -> np.ndarray:
        """Activated output (n, k) for X (n, d)."""
        z = self._logits(X)
        self._output(z)
        return z

    def loss(self, X: np.ndarray, y: np.ndarray) -> float:
        X = check_features(X, self.n_features_in_)
        return self._output_loss(self._logits(X), self._check_targets(y, len(X)))[0]

    def train_step(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """One optimizer step on this batch; the loss returned is from *before* the step."""
        self._ready()
        loss = self._gradients(X, self._targets(y))[0]
        np.clip(self._grads, -CLIP, CLIP, out=self._grads)
        self.optimizer.step([self._params], [self._grads])
        np.clip(self._params, -CLIP, CLIP, out=self._params)
        return {"loss": loss}

    def _gradients(self, X: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
        """Loss and its gradients [dW0, db0, dW1, db1, ...] (views into one flat array) on
        this batch, without updating anything; ``y`` as ``_targets`` returns it."""
        acts = [X]  # the input of each layer
        for W, b in zip(self._W[:-1], self._b[:-1], strict=True):
            h = acts[-1] @ W  # (n, d_out)
            h += b
            self._activate(h)
            acts.append(h)
        z = acts[-1] @ self._W[-1]  # (n, k) logits
        z += self._b[-1]
        loss, delta = self._output_loss(z, y)  # delta = dL/dz (n, k)
        for i in range(len(self._W) - 1, -1, -1):
            np.matmul(acts[i].T, delta, out=self._dweights[i])  # (d_in, d_out)
            delta.sum(axis=0, out=self._dbiases[i])
            if i:
                delta = delta @ self._W[i].T  # dL/d(acts[i]) (n, d_in)
                self._activate_backward(delta, acts[i])
        return loss, self._grad_views

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """y in the form the output loss wants, without checks: class indices (n,) or
        probability rows (n, k) for softmax, (n, k) floats otherwise."""
        if self.output_activation == "softmax":
            if y.ndim == 1:
                return y.astype(np.intp, copy=False)
            if y.shape[1] == 1:
                return y[:, 0].astype(np.intp)
            return y
        return y.reshape(len(y), -1)

    def _check_targets(self, y: Any, n_samples: int) -> np.ndarray:
        """``_targets`` with every check: ``loss`` validates, ``train_step`` does not."""
        k = self.layer_sizes[-1]
        array = np.asarray(y)
        if array.dtype.kind not in "biuf":
            raise ModelError(f"y must hold numbers, but its dtype is {array.dtype}.")
        if len(array) != n_samples:
            raise ModelError(f"X has {n_samples} rows but y has {len(array)}; they must match.")
        array = array.astype(np.float64, copy=False)
        if not np.isfinite(array).all():
            raise ModelError("y contains NaN or infinite values; remove those samples first.")
        if self.output_activation == "softmax" and (
            array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)
        ):
            labels = array.ravel()
            if np.any(labels != np.round(labels)) or labels.min() < 0 or labels.max() >= k:
                raise ModelError(
                    f"y must hold class labels 0 to {k - 1} for this {k}-output softmax MLP; "
                    f"got values from {labels.min():g} to {labels.max():g}."
                )
            return labels.astype(np.intp)
        if array.ndim == 1 and k == 1:
            array = array[:, None]
        if array.ndim != 2 or array.shape[1] != k:
            raise ModelError(
                f"y has shape {array.shape}, but this MLP has {k} outputs: pass shape "
                f"(n_samples, {k})" + (" or (n_samples,)." if k == 1 else ".")
            )
        if self.output_activation == "sigmoid" and (array.min() < 0 or array.max() > 1):
            raise ModelError("y must hold 0/1 labels (or probabilities) for a sigmoid MLP.")
        return array

    # ------------------------------------------------------------------ checkpoints

    def _weights(self) -> dict[str, np.ndarray]:
        named = {f"W{i}": W for i, W in enumerate(self.weights)}
        named.update({f"b{i}": b for i, b in enumerate(self._b)})
        return named

    def save(self, path: str | os.PathLike[str]) -> None:
        self._ready()
        write_checkpoint(
            path,
            model=self.name,
            hyperparameters=self.hyperparameters,
            optimizer_config=self.optimizer.config,
            weights=self._weights(),
            optimizer_state=self.optimizer.state_dict(),
        )

    def load(self, path: str | os.PathLike[str]) -> None:
        """Load a checkpoint of the same architecture, and its optimizer state when the
        optimizer type matches (so training resumes exactly)."""
        checkpoint = read_checkpoint(path, self.name)
        self._ready()
        saved = checkpoint.hyperparameters
        for key in ("layer_sizes", "activation", "output_activation"):
            if saved.get(key) != getattr(self, key):
                raise ModelError(
                    f"Cannot load checkpoint '{path}': it holds an MLP with {key} "
                    f"{_show(saved.get(key))}, but this model has {key} "
                    f"{_show(getattr(self, key))}."
                )
        copy_weights(checkpoint, self._weights())
        restore_optimizer(checkpoint, self.optimizer)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)
