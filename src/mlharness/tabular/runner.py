"""From a validated tabular config to a finished run directory (and back, for evaluation)."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlharness.config.paths import ensure_within_workspace, resolve_path
from mlharness.errors import ConfigValidationError, EvaluationError
from mlharness.tabular.config import (
    CsvConfig,
    ExperimentConfig,
    LinearRegressionConfig,
    compatibility_problems,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mlharness.runs.interrupt import GracefulInterrupt
    from mlharness.runs.metrics import MetricsWriter
    from mlharness.runs.output import OutputManager
    from mlharness.tabular.base import BaseModel
    from mlharness.tabular.datasets import BaseDataset
    from mlharness.tabular.loop import TrainingLoop
    from mlharness.tabular.resume import ResumePoint

log = logging.getLogger("mlharness")


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.summary["status"])


def dataset_seed(cfg: ExperimentConfig) -> int:
    seed = getattr(cfg.dataset.params, "seed", None)
    return cfg.training.seed if seed is None else int(seed)


def model_seed(cfg: ExperimentConfig) -> int:
    return cfg.training.seed if cfg.model.params.seed is None else cfg.model.params.seed


def build_dataset(cfg: ExperimentConfig) -> BaseDataset:
    """The dataset object of ``cfg`` (not yet generated); csv paths resolve in the workspace."""
    from mlharness.tabular.factory import make_dataset

    params = cfg.dataset.params.model_dump(exclude={"standardize"})
    if isinstance(cfg.dataset, CsvConfig):
        params["path"] = str(resolve_path(cfg.dataset.path or ""))
    if "seed" in params:
        params["seed"] = dataset_seed(cfg)
    return make_dataset(cfg.dataset.name, params)


def optimizer_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The training section's optimizer, overridden by the model's own optimizer_config."""
    return {
        "learning_rate": cfg.training.learning_rate,
        "optimizer_type": cfg.training.optimizer,
        **cfg.training.params,
        **(cfg.model.params.optimizer_config or {}),
    }


def build_model(cfg: ExperimentConfig, dataset: BaseDataset) -> BaseModel:
    """The untrained model of ``cfg``, checked against the dataset's shape."""
    from mlharness.tabular.linear import LinearRegression
    from mlharness.tabular.mlp import MLP

    problems = compatibility_problems(
        cfg.model, dataset.task, dataset.n_features, dataset.n_classes
    )
    if problems:
        raise ConfigValidationError(problems)
    # from_params: the schema checked these values when the config loaded; not again here.
    seed, optimizer = model_seed(cfg), optimizer_config(cfg)
    if isinstance(cfg.model, LinearRegressionConfig):
        return LinearRegression.from_params(cfg.model.params, seed=seed, optimizer_config=optimizer)
    return MLP.from_params(cfg.model.params, seed=seed, optimizer_config=optimizer)


def output_base(cfg: ExperimentConfig) -> Path:
    return ensure_within_workspace(cfg.output.directory, "Output directory")


def plan(cfg: ExperimentConfig) -> list[str]:
    """What a run of ``cfg`` would do, for ``--dry-run``; builds (never generates) the dataset."""
    dataset = build_dataset(cfg)
    base = output_base(cfg)
    model = build_model(cfg, dataset)
    t, o = cfg.training, cfg.output
    training = (
        "closed-form solve on the training split (epochs ignored)"
        if not model.is_iterative
        else f"{t.epochs} epochs, batch size {t.batch_size}, {t.optimizer} "
        f"lr={t.learning_rate}, seed {t.seed}"
    )
    checkpoints = (
        f"checkpoint_epoch_N every {o.checkpoint_frequency} epoch(s) and checkpoint_final"
        if o.save_checkpoints
        else "none (output.save_checkpoints is false)"
    )
    return [
        f"1. Dataset: {cfg.dataset.name} ({dataset.task}, {dataset.n_features} features"
        + (f", {dataset.n_classes} classes" if dataset.n_classes else "")
        + f"), validation fraction {t.validation_fraction}, seed {dataset_seed(cfg)}",
        f"2. Model: {cfg.model.name} ({_describe_model(cfg)}), seed {model_seed(cfg)}",
        f"3. Training: {training}",
        f"4. Output: {base / cfg.name}/<timestamp>/ (config.json, summary.json, metrics/, "
        f"checkpoints/, logs/); index {base / 'index.json'}",
        f"5. Checkpoints: {checkpoints}",
    ]


def _describe_model(cfg: ExperimentConfig) -> str:
    if isinstance(cfg.model, LinearRegressionConfig):
        p = cfg.model.params
        solver = "gradient descent" if p.use_gradient_descent else "closed form"
        return f"{solver}, l2 {p.l2_regularization}"
    m = cfg.model.params
    return f"layers {m.layer_sizes}, {m.activation}, output {m.output_activation or 'linear'}"


@contextmanager
def _console_log(path: Path | None) -> Iterator[None]:
    """Copy what the run prints to ``logs/console.log`` while the block runs."""
    if path is None:
        yield
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("mlharness")
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


def run_experiment(
    cfg: ExperimentConfig, *, progress: bool | None = None, fresh: bool = False
) -> RunResult:
    """Train ``cfg``; the summary says completed or interrupted.

    The experiment's latest unfinished run of the same config continues in its own
    directory from the last epoch it saved a resume state for (:mod:`mlharness.tabular.resume`),
    unless ``fresh``; otherwise a new run directory is made. Any exception marks the run failed
    (with the error in ``summary.json``) and propagates.
    """
    from mlharness.runs import lifecycle
    from mlharness.runs.metrics import MetricsWriter

    base = output_base(cfg)
    dataset = build_dataset(cfg)
    model = build_model(cfg, dataset)
    seeds = {"dataset": dataset_seed(cfg), "model": model_seed(cfg), "training": cfg.training.seed}
    config = cfg.model_dump(mode="json")
    point = _find_resumable(cfg, base, dataset, config, fresh)
    output = lifecycle.open_run(
        cfg.name,
        base,
        "tabular",
        resume_dir=None if point is None else point.run_dir,
        config=config,
        seeds=seeds,
        trackers=cfg.output,
    )
    history, resumed = _resume_into(output, point)
    log_path = output.get_logs_dir() / "console.log" if cfg.output.save_logs else None
    with _console_log(log_path):
        if point is not None:
            epochs = cfg.training.epochs if model.is_iterative else 1
            log.info("Resuming run %s from epoch %d of %d.", output.run_dir, point.epoch, epochs)
        writer = MetricsWriter(output.get_metrics_dir(), cfg.name, trackers=output.trackers)
        writer.history = list(history)

        def failed(status: str, error: str) -> None:
            writer.close()  # the loop closes it too; closing twice is harmless
            lifecycle.finish(output, status, error=error, **resumed)

        with lifecycle.guarded(failed) as stop:
            loop = _training_loop(cfg, model, dataset, writer, output, stop, progress)
            if point is not None:
                loop.resume_from(point, history)
            summary = lifecycle.finish(output, **loop.train(), **resumed)
        if summary["status"] == "completed":
            from mlharness.tabular.resume import discard

            discard(output.get_checkpoint_dir())  # a completed run is never resumed
        _report(cfg, output, summary)
    return RunResult(output.run_dir, summary)


def _find_resumable(
    cfg: ExperimentConfig,
    base: Path,
    dataset: BaseDataset,
    config: dict[str, Any],
    fresh: bool,
) -> ResumePoint | None:
    """The resume state of this config's unfinished run (see :func:`resume.find`)."""
    from mlharness.tabular import resume
    from mlharness.tabular.loop import split_data

    def data() -> str:
        t = cfg.training
        return resume.fingerprint(*split_data(dataset, t.seed, t.validation_fraction))

    return resume.find(base, cfg.name, config, data, fresh=fresh)


def _resume_into(
    output: OutputManager, point: ResumePoint | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The metrics records the resume state covers, and what the summary says of it.

    Later records, and the weights a stop saved mid-epoch (``checkpoint_interrupted``), go:
    those epochs are trained again.
    """
    from mlharness.runs.io import remove_directory
    from mlharness.runs.lifecycle import keep_history

    if point is None:
        return [], {}
    remove_directory(output.get_checkpoint_dir() / "checkpoint_interrupted")
    history = keep_history(output.get_metrics_dir(), point.epoch, key="epoch")
    return history, {"resumed_from": point.path, "resumed_at_epoch": point.epoch}


def _training_loop(
    cfg: ExperimentConfig,
    model: BaseModel,
    dataset: BaseDataset,
    writer: MetricsWriter,
    output: OutputManager,
    stop: GracefulInterrupt,
    progress: bool | None,
) -> TrainingLoop:
    from mlharness.tabular.loop import TrainingLoop

    return TrainingLoop(
        model=model,
        dataset=dataset,
        metrics_writer=writer,
        epochs=cfg.training.epochs,
        batch_size=cfg.training.batch_size,
        seed=cfg.training.seed,
        checkpoint_dir=output.get_checkpoint_dir() if cfg.output.save_checkpoints else None,
        checkpoint_frequency=cfg.output.checkpoint_frequency,
        validation_fraction=cfg.training.validation_fraction,
        shuffle=cfg.training.shuffle,
        standardize=cfg.dataset.params.standardize,
        stop=stop,
        progress=progress,
        resumable=True,
    )


def _report(cfg: ExperimentConfig, output: OutputManager, summary: dict[str, Any]) -> None:
    """The lines a finished (or interrupted) run leaves in the console and its log."""
    if summary["status"] == "interrupted":
        log.warning(
            "Interrupted after %d completed epoch(s); metrics and checkpoints so far are "
            "kept in %s.%s",
            summary["epochs_completed"],
            output.run_dir,
            _resume_hint(output.run_dir),
        )
        return
    log.info("Final metrics: %s", _short(summary["final_metrics"]))
    log.info("Metrics:       %s", output.get_metrics_dir() / "metrics.md")
    if cfg.output.save_checkpoints:
        log.info("Checkpoints:   %s", output.get_checkpoint_dir())
    log.info("Run directory: %s", output.run_dir)


def _resume_hint(run_dir: Path) -> str:
    from mlharness.tabular.resume import read_point

    point = read_point(run_dir)
    if point is None:
        return ""
    return (
        f" The same command resumes it from epoch {point.epoch}; --fresh starts a new run instead."
    )


def _short(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.6g}" for k, v in metrics.items() if isinstance(v, float))


# ----------------------------------------------------------------------------- evaluation


def load_run_config(run_dir: Path) -> ExperimentConfig:
    """The resolved config a run recorded in its ``config.json``."""
    import json

    from mlharness.config import validate

    path = run_dir / "config.json"
    if not path.is_file():
        raise EvaluationError(
            f"No config.json in {run_dir}. Pass the experiment config with --config."
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    data.pop("_run", None)
    return validate(ExperimentConfig, data)


def evaluate_run(
    run_dir: Path,
    cfg: ExperimentConfig,
    checkpoint: str = "checkpoint_final",
    metrics: list[str] | None = None,
) -> dict[str, Any]:
    """Score a run's checkpoint on its own train and validation splits; write eval/ files."""
    from mlharness.runs.io import atomic_write_json, atomic_write_text
    from mlharness.tabular.evaluation import Evaluator, score
    from mlharness.tabular.loop import split_data

    evaluator = Evaluator(run_dir)
    model = evaluator.load_model(checkpoint)
    dataset = build_dataset(cfg)
    X_train, X_val, y_train, y_val = split_data(
        dataset, cfg.training.seed, cfg.training.validation_fraction
    )
    splits = {"validation": (X_val, y_val), "train": (X_train, y_train)}
    results: dict[str, Any] = {}
    for split, (Xs, ys) in splits.items():
        if len(ys) == 0:
            continue
        scores = score(model, evaluator.transform(Xs), ys, dataset.n_classes)
        if metrics:
            unknown = [m for m in metrics if m not in scores]
            if unknown:
                raise EvaluationError(
                    f"Unknown metric(s) {', '.join(unknown)} for a {model.task} model. "
                    f"Available: {', '.join(scores)}."
                )
            scores = {m: scores[m] for m in metrics}
        results[split] = {"n_samples": len(ys), **scores}
    report = {
        "experiment": cfg.name,
        "run_dir": str(run_dir),
        "checkpoint": checkpoint,
        "task": model.task,
        "dataset": cfg.dataset.name,
        "splits": results,
    }
    out_dir = run_dir / "eval"
    atomic_write_json(out_dir / f"{checkpoint}.json", report)
    atomic_write_text(out_dir / f"{checkpoint}.md", eval_markdown(report))
    report["files"] = [str(out_dir / f"{checkpoint}.json"), str(out_dir / f"{checkpoint}.md")]
    return report


def eval_markdown(report: dict[str, Any]) -> str:
    from mlharness.runs.index import format_value

    lines = [
        f"# Evaluation: {report['experiment']}",
        "",
        f"Checkpoint `{report['checkpoint']}` of `{report['run_dir']}` "
        f"({report['task']}, dataset {report['dataset']}).",
        "",
    ]
    for split, scores in report["splits"].items():
        lines += [f"## {split.capitalize()} split ({scores['n_samples']} samples)", ""]
        lines += ["| Metric | Value |", "|---|---|"]
        for key, value in scores.items():
            if key in ("per_class", "confusion_matrix", "n_samples"):
                continue
            lines.append(f"| {key} | {format_value(value)} |")
        lines.append("")
        if "per_class" in scores:
            lines += ["| Class | Precision | Recall | F1 | Support |", "|---|---|---|---|---|"]
            for c, m in scores["per_class"].items():
                lines.append(
                    f"| {c} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} "
                    f"| {m['support']} |"
                )
            lines.append("")
        if "confusion_matrix" in scores:
            matrix = scores["confusion_matrix"]
            lines += ["Confusion matrix (rows: true class, columns: predicted):", ""]
            lines += ["| | " + " | ".join(str(i) for i in range(len(matrix))) + " |"]
            lines += ["|---" * (len(matrix) + 1) + "|"]
            lines += [
                f"| **{i}** | " + " | ".join(map(str, row)) + " |" for i, row in enumerate(matrix)
            ]
            lines.append("")
    return "\n".join(lines)
