"""The contract every tabular model keeps, and the checkpoint directory they all write.

The training loop and the evaluator only ever talk to :class:`BaseModel`: ``train_step`` on
batches, ``loss`` for validation, ``predict`` for metrics, ``save``/``load`` for checkpoints.
The evaluator does not know the architecture in advance, so a checkpoint records enough to
rebuild its model (:func:`mlharness.tabular.factory.load_model`):

    <checkpoint>/model.json      {"format_version": 1, "model": "mlp", "hyperparameters": {...},
                                  "optimizer_config": {...}, "shapes": {"W0": [20, 64], ...}}
    <checkpoint>/weights.npz     float64 arrays, loaded with allow_pickle=False
    <checkpoint>/optimizer.npz   optimizer state (step, moments), when the model has one

The directory is written with :func:`~mlharness.runs.io.atomic_directory`, so a crash leaves
the previous checkpoint or the new one, never a half-written one.
"""

from __future__ import annotations

import json
import os
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import numpy as np
import pydantic

from mlharness.config.loading import describe_errors
from mlharness.errors import CheckpointError, ModelError
from mlharness.runs.io import atomic_directory, atomic_write_json

if TYPE_CHECKING:
    from mlharness.tabular.optim import Optimizer

FORMAT_VERSION = 1
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.npz"
OPTIMIZER_FILE = "optimizer.npz"

Task = Literal["regression", "classification"]
Params = TypeVar("Params", bound=pydantic.BaseModel)


class BaseModel(ABC):
    """A NumPy model the training loop can drive batch by batch.

    ``predict`` is the public, validated entry point; ``forward`` and ``train_step`` trust
    their input, because they run once per batch and checks there would cost more than the
    arithmetic on a small model.
    """

    name: ClassVar[str]  # the "model" field of a checkpoint and of the experiment config
    optimizer: Optimizer | None  # None when the model is not trained by gradient steps

    @property
    @abstractmethod
    def task(self) -> Task:
        """Either "regression" or "classification": decides which metrics are computed."""

    @property
    def is_iterative(self) -> bool:
        """False when one ``train_step`` on the whole training set fits the model exactly
        (closed-form linear regression); the training loop then skips epochs and batches."""
        return True

    @property
    @abstractmethod
    def n_features_in_(self) -> int | None:
        """Number of input features, or None while the model has not seen any data."""

    @property
    @abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """Constructor arguments (besides optimizer_config) that rebuild this architecture;
        stored in model.json so :func:`load_model` can rebuild the model."""

    @abstractmethod
    def forward(self, X: np.ndarray) -> np.ndarray:
        """Model output, (n,) or (n, k), for a validated (n_samples, n_features) array."""

    @abstractmethod
    def train_step(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Update the model once on this batch; return at least ``{"loss": ...}``.

        Each model documents whether that loss is from before or after its update.
        """

    @abstractmethod
    def loss(self, X: np.ndarray, y: np.ndarray) -> float:
        """The training objective on (X, y) without updating: the validation loss."""

    @abstractmethod
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a checkpoint directory at ``path`` (replacing one that exists)."""

    @abstractmethod
    def load(self, path: str | os.PathLike[str]) -> None:
        """Load the weights (and optimizer state) of a checkpoint written by ``save``."""

    def predict(self, X: Any) -> np.ndarray:
        """Validate ``X`` and return the model output, 1-D when the model has one output."""
        out = self.forward(check_features(X, self.n_features_in_))
        return out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out


def check_features(X: Any, n_features: int | None) -> np.ndarray:
    """``X`` as a finite 2-D float64 array with ``n_features`` columns, or a ModelError.

    This is the one place user data enters a model, so each message says what is wrong and
    how to fix it rather than letting NumPy fail later with a broadcasting error.
    """
    try:
        array = np.asarray(X)
    except ValueError:
        raise ModelError(
            "X must be a rectangular 2-D array of numbers, but its rows have different lengths."
        ) from None
    if array.dtype.kind not in "biuf":
        raise ModelError(f"X must hold numbers, but its dtype is {array.dtype}.")
    if array.ndim != 2:
        raise ModelError(
            f"X must be a 2-D array of shape (n_samples, n_features), but it has shape "
            f"{array.shape}. Use X.reshape(-1, 1) for a single feature or X.reshape(1, -1) "
            "for a single sample."
        )
    if array.shape[0] == 0:
        raise ModelError("X has no rows; pass at least one sample.")
    if array.shape[1] == 0:
        raise ModelError("X has no feature columns; pass at least one feature.")
    if n_features is not None and array.shape[1] != n_features:
        raise ModelError(
            f"X has {array.shape[1]} features but the model was built for {n_features}."
        )
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array).all():
        raise ModelError("X contains NaN or infinite values; remove or impute them first.")
    return array


def checked_params(schema: type[Params], model: str, values: Mapping[str, Any]) -> Params:
    """The arguments of a model made in Python, checked by its config schema's rules.

    The schema is the one place a parameter's rules live: a config's values pass them when
    the config loads, and a Python caller's pass them here, at the model's first use. Types
    are strict, so a Python caller's "0.1" or True is refused rather than taken for a number;
    NumPy scalars and tuples, which Python callers pass for numbers and lists, are accepted.
    """
    try:
        return schema.model_validate({k: _plain(v) for k, v in values.items()}, strict=True)
    except pydantic.ValidationError as exc:
        problems = describe_errors(schema, exc)
    raise ModelError(f"{model}: {'; '.join(p.rstrip('.') for p in problems)}.")


def _plain(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays and tuples as the Python types they stand for."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


# --------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read back from disk: model.json's fields and the arrays."""

    path: Path
    meta: dict[str, Any]
    weights: dict[str, np.ndarray]
    optimizer_state: dict[str, np.ndarray] | None

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return dict(self.meta["hyperparameters"])


def write_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: str,
    hyperparameters: Mapping[str, Any],
    optimizer_config: Mapping[str, Any] | None,
    weights: Mapping[str, np.ndarray],
    optimizer_state: Mapping[str, Any] | None = None,
) -> None:
    """Write a checkpoint directory atomically; an existing one at ``path`` is replaced."""
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    meta = {
        "format_version": FORMAT_VERSION,
        "model": model,
        "hyperparameters": dict(hyperparameters),
        "optimizer_config": None if optimizer_config is None else dict(optimizer_config),
        "shapes": {k: list(v.shape) for k, v in arrays.items()},
    }
    with atomic_directory(path) as tmp:
        with open(tmp / WEIGHTS_FILE, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
        if optimizer_state is not None:
            state = {k: np.asarray(v) for k, v in optimizer_state.items()}
            with open(tmp / OPTIMIZER_FILE, "wb") as f:
                np.savez(f, **state)  # type: ignore[arg-type]
        atomic_write_json(tmp / MODEL_FILE, meta)


def read_model_json(
    path: str | os.PathLike[str], expected_model: str | None = None
) -> dict[str, Any]:
    """Read and check ``model.json``; with ``expected_model``, refuse other models."""
    directory = Path(path)
    if not directory.exists():
        raise CheckpointError(
            f"Checkpoint '{directory}' does not exist. Check the path; a run's checkpoints "
            "are in its checkpoints/ directory (e.g. checkpoints/checkpoint_final)."
        )
    if not directory.is_dir():
        raise CheckpointError(
            f"Checkpoint '{directory}' is a file, but checkpoints are directories holding "
            f"{MODEL_FILE} and {WEIGHTS_FILE}. Pass the directory instead."
        )
    model_file = directory / MODEL_FILE
    if not model_file.is_file():
        raise CheckpointError(
            f"Checkpoint '{directory}' has no {MODEL_FILE}, so it is incomplete or not an "
            "mlharness checkpoint. Use another checkpoint or save this one again."
        )
    try:
        meta = json.loads(model_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{model_file} cannot be read ({exc}). Use another checkpoint or save this one again."
        ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{model_file} must hold a JSON object. Save the checkpoint again.")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint '{directory}' has format_version {version!r}, but this version of "
            f"mlharness reads format_version {FORMAT_VERSION}. Load it with the mlharness "
            "version that wrote it, or train the model again."
        )
    for key, kind in (("model", str), ("hyperparameters", dict), ("shapes", dict)):
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(
                f"{model_file} lacks a valid '{key}' field. Save the checkpoint again."
            )
    if expected_model is not None and meta["model"] != expected_model:
        raise CheckpointError(
            f"Checkpoint '{directory}' holds a '{meta['model']}' model, not a "
            f"'{expected_model}' model. Load it with mlharness.models.load_model(path), which "
            "builds the model the checkpoint holds."
        )
    return meta


def _read_npz(file: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(file, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"{file} cannot be read ({exc}). Use another checkpoint or save this one again."
        ) from None


def read_checkpoint(path: str | os.PathLike[str], expected_model: str) -> Checkpoint:
    """Read a whole checkpoint of model ``expected_model`` and check its arrays' shapes."""
    meta = read_model_json(path, expected_model)
    directory = Path(path)
    weights_file = directory / WEIGHTS_FILE
    if not weights_file.is_file():
        raise CheckpointError(
            f"Checkpoint '{directory}' has no {WEIGHTS_FILE}, so it is incomplete. Use another "
            "checkpoint or save this one again."
        )
    weights = _read_npz(weights_file)
    for name, shape in meta["shapes"].items():
        if name not in weights or list(weights[name].shape) != list(shape):
            found = list(weights[name].shape) if name in weights else "nothing"
            raise CheckpointError(
                f"{weights_file} should hold '{name}' of shape {list(shape)} but holds "
                f"{found}; the checkpoint is damaged. Use another checkpoint or save it again."
            )
    optimizer_file = directory / OPTIMIZER_FILE
    optimizer_state = _read_npz(optimizer_file) if optimizer_file.is_file() else None
    return Checkpoint(directory, meta, weights, optimizer_state)


def copy_weights(checkpoint: Checkpoint, targets: Mapping[str, np.ndarray]) -> None:
    """Copy a checkpoint's arrays into the model's own arrays (views), in place.

    Every shape is checked before anything is copied, so a bad checkpoint leaves the model
    as it was; without the check NumPy would silently broadcast a scalar into a matrix.
    """
    for name, target in targets.items():
        source = checkpoint.weights.get(name)
        if source is None or source.shape != target.shape:
            found = "nothing" if source is None else f"shape {list(source.shape)}"
            raise CheckpointError(
                f"Checkpoint '{checkpoint.path}' should hold '{name}' of shape "
                f"{list(target.shape)} but holds {found}; it is damaged. Use another "
                "checkpoint or save it again."
            )
    for name, target in targets.items():
        target[...] = checkpoint.weights[name]


def restore_optimizer(checkpoint: Checkpoint, optimizer: Optimizer) -> None:
    """Load the checkpoint's optimizer state if it came from the same kind of optimizer.

    A different kind (say, fine-tuning an Adam-trained model with SGD) starts fresh: its
    moments would mean nothing to the new optimizer.
    """
    config = checkpoint.meta.get("optimizer_config") or {}
    if checkpoint.optimizer_state is not None and config.get("optimizer_type") == optimizer.name:
        optimizer.load_state_dict(checkpoint.optimizer_state)
