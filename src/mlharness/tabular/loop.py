"""The epoch loop: batches, per-epoch metrics, checkpoints, and a clean stop on Ctrl+C.

Everything random comes from ``seed``: the split, the per-epoch shuffles, so the same
config gives the same metrics file byte for byte. A resumable loop also leaves, after each
epoch, the state to continue from there (:mod:`mlharness.tabular.resume`), and a loop given
that state (:meth:`TrainingLoop.resume_from`) ends exactly as one that never stopped.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlharness.errors import CheckpointError, ConfigError, ModelError
from mlharness.runs.io import atomic_write_json
from mlharness.runs.progress import ProgressBar
from mlharness.tabular.evaluation import (
    PREPROCESSING_FILE,
    accuracy,
    predict_labels,
    regression_metrics,
)

if TYPE_CHECKING:
    from mlharness.runs.interrupt import GracefulInterrupt
    from mlharness.runs.metrics import MetricsWriter
    from mlharness.tabular.base import BaseModel
    from mlharness.tabular.datasets import BaseDataset
    from mlharness.tabular.resume import ResumePoint

log = logging.getLogger("mlharness")

# A resumable loop writes its resume state after an epoch at most once per this many
# seconds, and less often when writing is slow (at most 5% of the time): a run killed
# (SIGKILL) then redoes at most about this much work; a stop asked for at the end of an
# epoch writes it there and then.
RESUME_INTERVAL_S = 1.0


def split_data(
    dataset: BaseDataset, seed: int, validation_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The (X_train, X_val, y_train, y_val) a run with this seed trains and validates on.

    A dataset with its own seed keeps it; otherwise the training seed generates the data.
    Evaluation calls this too, so it scores exactly the split training held out.
    """
    from mlharness.tabular.preprocessing import train_val_split

    own_seed = getattr(dataset, "seed", None)
    X, y = dataset.generate(seed=None if own_seed is not None else seed)
    return train_val_split(
        X, y, validation_fraction, seed=seed, stratify=dataset.task == "classification"
    )


class TrainingLoop:
    """Train ``model`` on ``dataset`` for ``epochs`` and write metrics and checkpoints.

    A closed-form model (``model.is_iterative`` False) is fitted once on the whole training
    split and reported as one epoch. With ``resumable`` (and a ``checkpoint_dir``) the state
    after each epoch is kept in ``checkpoint_dir/resume``.
    """

    def __init__(
        self,
        model: BaseModel,
        dataset: BaseDataset,
        metrics_writer: MetricsWriter | None = None,
        epochs: int = 10,
        batch_size: int = 32,
        seed: int = 42,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        checkpoint_frequency: int = 1,
        validation_fraction: float = 0.2,
        shuffle: bool = True,
        standardize: bool = False,
        stop: GracefulInterrupt | None = None,
        progress: bool | None = None,
        resumable: bool = False,
    ) -> None:
        self.model = model
        self.dataset = dataset
        self.metrics_writer = metrics_writer
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = seed
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.checkpoint_frequency = checkpoint_frequency
        self.validation_fraction = validation_fraction
        self.shuffle = shuffle
        self.standardize = standardize
        self.stop = stop
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.resumable = resumable
        self.history: list[dict[str, Any]] = []
        self.checkpoints: list[str] = []
        self.data_fingerprint: str | None = None
        self._resume: ResumePoint | None = None
        self._resume_due = 0.0  # when the next resume state is due (time.monotonic)

    # ------------------------------------------------------------------ data

    def prepare_data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Generate or load the data, split it, and standardise it with training statistics."""
        from mlharness.tabular.preprocessing import Standardizer

        X_train, X_val, y_train, y_val = split_data(
            self.dataset, self.seed, self.validation_fraction
        )
        if self.resumable:
            from mlharness.tabular.resume import fingerprint

            self.data_fingerprint = fingerprint(X_train, X_val, y_train, y_val)
        if self.standardize:
            scaler = Standardizer().fit(X_train)
            X_train, X_val = scaler.transform(X_train), scaler.transform(X_val)
            if self.checkpoint_dir is not None:
                atomic_write_json(self.checkpoint_dir / PREPROCESSING_FILE, scaler.to_dict())
        return X_train, X_val, y_train, y_val

    # ------------------------------------------------------------------ metrics

    def epoch_metrics(
        self, epoch: int, train_loss: float, X_val: np.ndarray, y_val: np.ndarray
    ) -> dict[str, Any]:
        """Loss, validation loss and accuracy or MSE/R² of one epoch.

        No timings here: the metrics files of two runs with the same seed must be identical.
        """
        record: dict[str, Any] = {"epoch": epoch, "loss": train_loss}
        has_val = len(y_val) > 0
        if has_val:
            record["val_loss"] = self.model.loss(X_val, y_val)
        if self.model.task == "classification":
            X_tr, y_tr = self._train_eval
            record["accuracy"] = accuracy(y_tr, predict_labels(self.model, X_tr)[0])
            if has_val:
                record["val_accuracy"] = accuracy(y_val, predict_labels(self.model, X_val)[0])
        else:
            X_tr, y_tr = self._train_eval
            train = regression_metrics(y_tr, self.model.predict(X_tr))
            record["mse"], record["r2"] = train["mse"], train["r2"]
            if has_val:
                val = regression_metrics(y_val, self.model.predict(X_val))
                record["val_mse"], record["val_r2"] = val["mse"], val["r2"]
        return record

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, name: str) -> None:
        if self.checkpoint_dir is None:
            return
        self.model.save(self.checkpoint_dir / name)
        self.checkpoints.append(name)

    def resume_from(self, point: ResumePoint, history: list[dict[str, Any]]) -> None:
        """Continue after ``point``'s epoch: its weights, optimizer state, shuffling RNG and
        checkpoint list; ``history`` is the metrics records of epochs 1 to ``point.epoch``."""
        try:
            self.model.load(point.model_path)
        except (CheckpointError, ModelError) as exc:
            raise CheckpointError(
                f"Cannot resume run {point.run_dir} from {point.path}: {exc} Start a new run "
                "with --fresh."
            ) from exc
        self.history = list(history)
        self.checkpoints = [str(name) for name in point.state.get("checkpoints", [])]
        self._resume = point

    def _save_resume_state(
        self, epoch: int, rng: np.random.Generator, seconds: float, *, force: bool = False
    ) -> None:
        """Write the state after ``epoch`` when due (see :data:`RESUME_INTERVAL_S`)."""
        now = time.monotonic()
        if not self.resumable or self.checkpoint_dir is None:
            return
        if now < self._resume_due and not force:
            return
        from mlharness.tabular.resume import write_state

        state = {
            "epoch": epoch,
            "rng": rng.bit_generator.state,
            "data": self.data_fingerprint,
            "checkpoints": list(self.checkpoints),
            "train_seconds": round(seconds, 3),
        }
        write_state(self.checkpoint_dir, self.model, state)
        cost = time.monotonic() - now
        self._resume_due = time.monotonic() + RESUME_INTERVAL_S * max(1.0, cost / 0.05)

    # ------------------------------------------------------------------ the loop

    def _check_arguments(self) -> None:
        for name in ("epochs", "batch_size", "checkpoint_frequency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if not 0 <= self.validation_fraction < 1:
            raise ConfigError(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}."
            )

    def train(self) -> dict[str, Any]:
        """Run the loop; returns a summary with ``status`` completed or interrupted.

        The metrics writer, if any, is closed at the end (metrics.json, metrics.md and
        curves.png written), whatever the outcome.
        """
        self._check_arguments()
        try:
            summary = self._train()
        except BaseException:
            if self.metrics_writer is not None:
                self.metrics_writer.close()
            raise
        if self.metrics_writer is not None:
            self.metrics_writer.close(summary["final_metrics"])
        return summary

    def _train(self) -> dict[str, Any]:
        started = time.monotonic()
        X_train, X_val, y_train, y_val = self.prepare_data()
        # Per-epoch train metrics on at most 10,000 rows keep the epoch cost bounded.
        self._train_eval = (X_train[:10_000], y_train[:10_000])
        log.info(
            "Data: %d training and %d validation samples, %d features (%s).",
            len(y_train),
            len(y_val),
            X_train.shape[1],
            self.dataset.task,
        )
        epochs = self.epochs if self.model.is_iterative else 1
        rng = np.random.default_rng(self.seed)
        done, seconds = 0, 0.0
        if self._resume is not None:
            rng.bit_generator.state = self._resume.state["rng"]
            done = self._resume.epoch
            seconds = float(self._resume.state.get("train_seconds", 0.0))
        started -= seconds  # a resumed run's training time goes on from where it stopped
        status = self._epochs(done, epochs, rng, (X_train, y_train, X_val, y_val), started)
        self.save_checkpoint(
            "checkpoint_final" if status == "completed" else "checkpoint_interrupted"
        )
        final = dict(self.history[-1]) if self.history else {}
        return {
            "status": status,
            "final_metrics": final,
            "epochs_completed": len(self.history),
            "epochs_planned": epochs,
            "train_seconds": round(time.monotonic() - started, 3),
            "checkpoints": list(self.checkpoints),
        }

    def _epochs(
        self,
        done: int,
        epochs: int,
        rng: np.random.Generator,
        data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        started: float,
    ) -> str:
        """Epochs ``done + 1`` to ``epochs``; "completed", or "interrupted" on a stop."""
        X_train, y_train, X_val, y_val = data
        self._resume_due = time.monotonic() + RESUME_INTERVAL_S
        # One epoch is no progress to watch: a closed-form fit shows no bar.
        with ProgressBar(self.progress and epochs > 1, transient=True) as bar:
            task = bar.task("Training", epochs, done)
            for epoch in range(done + 1, epochs + 1):
                if self.model.is_iterative:
                    train_loss = self._run_epoch(X_train, y_train, rng)
                else:
                    # A closed-form step fits and returns the fitted model's loss.
                    train_loss = float(self.model.train_step(X_train, y_train)["loss"])
                if train_loss is None:
                    return "interrupted"
                record = self.epoch_metrics(epoch, train_loss, X_val, y_val)
                self.history.append(record)
                if self.metrics_writer is not None:
                    self.metrics_writer.log(record)
                if epoch % self.checkpoint_frequency == 0:
                    self.save_checkpoint(f"checkpoint_epoch_{epoch}")
                stopping = self.stop is not None and self.stop.requested
                # After the record and the epoch's checkpoint: a kill in between resumes
                # from an earlier epoch, and the resumed run writes both again.
                self._save_resume_state(epoch, rng, time.monotonic() - started, force=stopping)
                task.advance(1, _bar_info(record))
                if _should_print(epoch, epochs):
                    log.info(_format_record(record, epochs))
                if stopping:
                    return "interrupted"
        return "completed"

    def _run_epoch(self, X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> float | None:
        """One pass over the training split; None when a stop was requested mid-epoch."""
        n = len(y)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        total = 0.0
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            out = self.model.train_step(X[idx], y[idx])
            total += float(out["loss"]) * len(idx)
            if self.stop is not None and self.stop.requested:
                return None
        return total / n


def _should_print(epoch: int, epochs: int) -> bool:
    every = max(1, epochs // 10)
    return epoch == 1 or epoch == epochs or epoch % every == 0


def _bar_info(record: dict[str, Any]) -> str:
    return "  ".join(
        f"{k} {record[k]:.4g}" for k in ("loss", "val_loss") if record.get(k) is not None
    )


def _format_record(record: dict[str, Any], epochs: int) -> str:
    parts = [f"Epoch {record['epoch']}/{epochs}"]
    for key, value in record.items():
        if key == "epoch" or value is None:
            continue
        parts.append(f"{key} {value:.6g}")
    return "  ".join(parts)
