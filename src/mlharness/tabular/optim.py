"""NumPy optimizers with the update rules of ``torch.optim``, for the tabular models.

``step`` runs once per mini-batch, and for a small MLP the Python overhead of each NumPy call
costs as much as its arithmetic. So updates are in place, through ``out=`` arguments and
augmented assignment into buffers allocated on the first step, and the MLP hands over its
parameters as one flat array: a step is about a dozen NumPy calls whatever the network's depth.

State (step count, learning rate and other hyperparameters, moment buffers) round-trips
through ``state_dict`` as arrays and numbers that fit an ``.npz``, so a resumed run continues
exactly where it stopped.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from mlharness.errors import ModelError

StateDict = dict[str, "np.ndarray | float | int"]


def _number(optimizer: str, name: str, value: Any, low: float, high: float = math.inf) -> float:
    """``value`` as a float in ``[low, high)``, or a ModelError that says what was expected."""
    upper = "" if math.isinf(high) else f" and less than {high:g}"
    wanted = f"The '{name}' hyperparameter of optimizer '{optimizer}' must be a number"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ModelError(f"{wanted}. Got {value!r} instead.") from None
    if isinstance(value, bool) or not (low <= number < high):
        raise ModelError(f"{wanted} of at least {low:g}{upper}. Got {value!r} instead.")
    return number


class Optimizer:
    """Updates a list of parameter arrays in place from their gradients.

    A subclass names its per-parameter buffers and implements ``_update`` for one parameter;
    step counting, buffer allocation and state dicts live here. Hyperparameters other than the
    learning rate are kept in ``hyperparams`` so that state dicts and configs list them all.
    """

    name: ClassVar[str]

    def __init__(self, learning_rate: float, **hyperparams: float) -> None:
        try:
            lr = float(learning_rate)
        except (TypeError, ValueError):
            lr = math.nan
        if isinstance(learning_rate, bool) or not (math.isfinite(lr) and lr > 0.0):
            raise ModelError(
                f"The learning rate must be a positive number, e.g. 0.001. Got {learning_rate!r}."
            )
        self.learning_rate = lr
        self.hyperparams: dict[str, float] = {k: float(v) for k, v in hyperparams.items()}
        self.step_count = 0
        # Buffer name -> one array per parameter. Filled on the first step (or by
        # load_state_dict), because only then are the parameter shapes known.
        self.state: dict[str, list[np.ndarray]] = {}
        # Two scratch arrays per parameter, reused by every step so that it allocates nothing.
        self._scratch: list[tuple[np.ndarray, np.ndarray]] = []

    def _buffer_names(self) -> tuple[str, ...]:
        """Names of the per-parameter state arrays this optimizer keeps."""
        return ()

    def _update(self, i: int, p: np.ndarray, g: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        """Update parameter ``i`` (``p``) from its gradient ``g``, with scratch arrays a, b."""
        raise NotImplementedError

    @property
    def config(self) -> dict[str, Any]:
        """The config that rebuilds this optimizer with :func:`make_optimizer`."""
        return {
            "optimizer_type": self.name,
            "learning_rate": self.learning_rate,
            **self.hyperparams,
        }

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        """Apply one update to each array of ``params`` in place; ``grads`` stay unchanged."""
        if not self._scratch:
            self._allocate(params)
        self.step_count += 1
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            a, b = self._scratch[i]
            self._update(i, p, g, a, b)

    def _allocate(self, params: list[np.ndarray]) -> None:
        shapes = [p.shape for p in params]
        for name in self._buffer_names():
            arrays = self.state.get(name)
            if arrays is None:
                self.state[name] = [np.zeros(s) for s in shapes]
            elif [a.shape for a in arrays] != shapes:  # restored by load_state_dict
                raise ModelError(
                    f"The optimizer state holds '{name}' buffers of shapes "
                    f"{[a.shape for a in arrays]}, but the parameters have shapes {shapes}; "
                    "the state was saved for a different model."
                )
        self._scratch = [(np.empty(s), np.empty(s)) for s in shapes]

    def _coupled_weight_decay(self, p: np.ndarray, g: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``g + weight_decay * p`` in ``out``: torch's L2 penalty folded into the gradient."""
        np.multiply(p, self.hyperparams["weight_decay"], out=out)
        out += g
        return out

    def state_dict(self) -> StateDict:
        """Step count, hyperparameters and buffers (as ``'<buffer>.<parameter index>'``)."""
        state: StateDict = {"step": self.step_count, "learning_rate": self.learning_rate}
        state.update(self.hyperparams)
        for name, arrays in self.state.items():
            for i, array in enumerate(arrays):
                state[f"{name}.{i}"] = array.copy()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; values may be 0-d arrays from an ``.npz``.

        As in torch, the saved hyperparameters (learning rate included) replace the current
        ones, so a resumed run continues with exactly the settings it stopped with.
        """
        scalars = {"step", "learning_rate", *self.hyperparams}
        missing = sorted(scalars - set(state))
        if missing:
            raise ModelError(
                f"The optimizer state lacks {', '.join(missing)}, so it was not saved by a "
                f"'{self.name}' optimizer."
            )
        buffers: dict[str, dict[int, np.ndarray]] = {}
        for key, value in state.items():
            if key not in scalars:
                name, _, index = key.rpartition(".")
                if not index.isdigit():
                    index = "-1"  # rejected below
                buffers.setdefault(name, {})[int(index)] = np.array(value, dtype=np.float64)
        current = self.hyperparams
        self.hyperparams = {k: float(state[k]) for k in current}
        # Checked after the hyperparameters: SGD and RMSprop keep a momentum buffer only
        # when their momentum is above 0.
        expected = self._buffer_names()
        for name, arrays in buffers.items():
            if name not in expected or sorted(arrays) != list(range(len(arrays))):
                self.hyperparams = current
                raise ModelError(
                    f"The optimizer state has unexpected entries '{name}.*', so it was not "
                    f"saved by a '{self.name}' optimizer."
                )
        self.step_count = int(state["step"])
        self.learning_rate = float(state["learning_rate"])
        # A state saved before the first step has no buffers: they start at zero then.
        self.state = {name: [d[i] for i in sorted(d)] for name, d in buffers.items()}
        self._scratch = []  # re-allocated, and the buffers shape-checked, on the next step


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD``.

    The momentum buffer starts at zero; with dampening 0 that equals torch's "the first buffer
    is the gradient".
    """

    name = "sgd"

    def __init__(
        self,
        learning_rate: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        momentum = _number("sgd", "momentum", momentum, 0.0, 1.0)
        weight_decay = _number("sgd", "weight_decay", weight_decay, 0.0)
        if not isinstance(nesterov, bool):
            raise ModelError(
                f"The 'nesterov' hyperparameter must be true or false. Got {nesterov!r}."
            )
        if nesterov and momentum == 0.0:
            raise ModelError(
                "Nesterov momentum needs a momentum above 0; set 'momentum', e.g. 0.9."
            )
        self.nesterov = nesterov
        super().__init__(learning_rate, momentum=momentum, weight_decay=weight_decay)

    def _buffer_names(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.hyperparams["momentum"] else ()

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "nesterov": self.nesterov}

    def _update(self, i: int, p: np.ndarray, g: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        h = self.hyperparams
        if h["weight_decay"]:
            g = self._coupled_weight_decay(p, g, out=a)
        if h["momentum"]:
            buf = self.state["momentum_buffer"][i]
            buf *= h["momentum"]
            buf += g
            if self.nesterov:  # look ahead: g + momentum * buf
                np.multiply(buf, h["momentum"], out=b)
                b += g
                g = b
            else:
                g = buf
        np.multiply(g, self.learning_rate, out=b)
        p -= b


class Adam(Optimizer):
    """Adam with bias correction, as ``torch.optim.Adam``; weight decay is an L2 term added
    to the gradient (so it is scaled by the adaptive step, unlike :class:`AdamW`)."""

    name = "adam"
    decoupled_weight_decay: ClassVar[bool] = False

    def __init__(
        self,
        learning_rate: float,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(
            learning_rate,
            beta1=_number(self.name, "beta1", beta1, 0.0, 1.0),
            beta2=_number(self.name, "beta2", beta2, 0.0, 1.0),
            eps=_number(self.name, "eps", eps, 0.0),
            weight_decay=_number(self.name, "weight_decay", weight_decay, 0.0),
        )

    def _buffer_names(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def _update(self, i: int, p: np.ndarray, g: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        h = self.hyperparams
        beta1, beta2 = h["beta1"], h["beta2"]
        if h["weight_decay"] and self.decoupled_weight_decay:
            p *= 1.0 - self.learning_rate * h["weight_decay"]
        elif h["weight_decay"]:
            g = self._coupled_weight_decay(p, g, out=a)
        m, v = self.state["exp_avg"][i], self.state["exp_avg_sq"][i]
        m *= beta1  # m = beta1 * m + (1 - beta1) * g
        np.multiply(g, 1.0 - beta1, out=b)
        m += b
        v *= beta2  # v = beta2 * v + (1 - beta2) * g * g
        np.multiply(g, 1.0 - beta2, out=b)
        b *= g
        v += b
        t = self.step_count
        np.sqrt(v, out=b)  # denominator: sqrt(v / (1 - beta2^t)) + eps
        b /= math.sqrt(1.0 - beta2**t)
        b += h["eps"]
        np.divide(m, b, out=b)
        b *= self.learning_rate / (1.0 - beta1**t)
        p -= b


class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``: parameters shrink by
    ``lr * weight_decay`` before the Adam step, whatever the gradient's scale."""

    name = "adamw"
    decoupled_weight_decay = True

    def __init__(
        self,
        learning_rate: float,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(learning_rate, beta1, beta2, eps, weight_decay)


class RMSprop(Optimizer):
    """RMSprop (uncentred) with optional momentum, as ``torch.optim.RMSprop``."""

    name = "rmsprop"

    def __init__(
        self,
        learning_rate: float,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(
            learning_rate,
            alpha=_number(self.name, "alpha", alpha, 0.0, 1.0),
            eps=_number(self.name, "eps", eps, 0.0),
            momentum=_number(self.name, "momentum", momentum, 0.0, 1.0),
            weight_decay=_number(self.name, "weight_decay", weight_decay, 0.0),
        )

    def _buffer_names(self) -> tuple[str, ...]:
        return (
            ("square_avg", "momentum_buffer") if self.hyperparams["momentum"] else ("square_avg",)
        )

    def _update(self, i: int, p: np.ndarray, g: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        h = self.hyperparams
        if h["weight_decay"]:
            g = self._coupled_weight_decay(p, g, out=a)
        sq = self.state["square_avg"][i]
        sq *= h["alpha"]  # sq = alpha * sq + (1 - alpha) * g * g
        np.multiply(g, 1.0 - h["alpha"], out=b)
        b *= g
        sq += b
        np.sqrt(sq, out=b)
        b += h["eps"]
        np.divide(g, b, out=b)  # g / (sqrt(sq) + eps)
        if h["momentum"]:
            buf = self.state["momentum_buffer"][i]
            buf *= h["momentum"]
            buf += b
            np.multiply(buf, self.learning_rate, out=b)
        else:
            b *= self.learning_rate
        p -= b


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "adam": Adam,
    "adamw": AdamW,
    "rmsprop": RMSprop,
}


def _hyperparameter_names(cls: type[Optimizer]) -> list[str]:
    """The keyword arguments of ``cls`` besides the learning rate, in signature order."""
    params = inspect.signature(cls.__init__).parameters
    return [name for name in params if name not in ("self", "learning_rate")]


def make_optimizer(config: Mapping[str, Any] | None) -> Optimizer:
    """Build an optimizer from ``{"optimizer_type": ..., "learning_rate": ..., **hyperparams}``.

    Defaults: Adam with learning rate 0.001. Unknown names raise a ModelError that lists what
    is accepted, so a typo in a config file never silently falls back to a default.
    """
    options = dict(config or {})
    kind = options.pop("optimizer_type", "adam")
    cls = OPTIMIZERS.get(str(kind).lower())
    if cls is None:
        raise ModelError(
            f"Unknown optimizer '{kind}'. Supported optimizers: {', '.join(sorted(OPTIMIZERS))}."
        )
    learning_rate = options.pop("learning_rate", 0.001)
    accepted = _hyperparameter_names(cls)
    for key in options:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ModelError(
                f"Unknown hyperparameter '{key}' for optimizer '{cls.name}'.{hint} Accepted: "
                f"{', '.join(['learning_rate', 'optimizer_type', *accepted])}."
            )
    return cls(learning_rate, **options)
