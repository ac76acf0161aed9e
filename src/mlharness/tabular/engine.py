"""The tabular engine's side of the run contract (:class:`mlharness.runs.engine.Engine`).

Only configs are imported here; the NumPy models and datasets load when a command uses
them, so ``mlx --help`` and dry runs of other kinds stay light.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlharness.runs.engine import EvalRequest
from mlharness.tabular.config import TABULAR_METRICS, ExperimentConfig

METRICS = TABULAR_METRICS


def _say(text: str) -> None:
    print(text, flush=True)


def load(path: Path, set_items: Sequence[str], strict: bool) -> ExperimentConfig:
    from mlharness.config import load_config

    return load_config(path, ExperimentConfig, set_items=list(set_items), strict=strict)


def from_raw(raw: Mapping[str, Any], source: Path, strict: bool) -> ExperimentConfig:
    from mlharness.config import validate

    return validate(ExperimentConfig, raw, strict=strict)


def check(config: ExperimentConfig) -> None:
    """The output directory lies in the workspace; the dataset builds (a csv file exists)."""
    from mlharness.tabular import runner

    runner.output_base(config)
    runner.build_dataset(config)


def plan(config: ExperimentConfig) -> list[str]:
    from mlharness.tabular import runner

    return runner.plan(config)


def train(config: ExperimentConfig, *, fresh: bool = False) -> str:
    """Resume the latest unfinished run of ``config`` (same resolved config), or with
    ``fresh`` (or when there is none) start a new run."""
    from mlharness.tabular import runner

    description = f" ({config.description})" if config.description else ""
    _say(f"Experiment: {config.name}{description}")
    return runner.run_experiment(config, fresh=fresh).status


def evaluate(request: EvalRequest) -> None:
    """Re-score a checkpoint (default ``checkpoint_final``) on the run's own splits."""
    from mlharness.tabular import runner

    run_dir = request.existing_run_dir()
    checkpoint = request.checkpoint or "checkpoint_final"
    if request.config is not None:
        cfg = load(request.config, request.set_items, request.strict)
        source = str(request.config)
    else:
        cfg = runner.load_run_config(run_dir)
        source = str(run_dir / "config.json")
    if request.dry_run:
        _eval_plan(run_dir, cfg, source, checkpoint, request.metrics)
        return
    report = runner.evaluate_run(run_dir, cfg, checkpoint, request.metrics)
    _say(runner.eval_markdown(report))
    _say("Written: " + ", ".join(report["files"]))


def _eval_plan(
    run_dir: Path, cfg: ExperimentConfig, source: str, checkpoint: str, wanted: list[str] | None
) -> None:
    ckpt_path = run_dir / "checkpoints" / checkpoint
    exists = "found" if (ckpt_path / "model.json").is_file() else "NOT FOUND"
    t = cfg.training
    for line in (
        f"Configuration source: {source}",
        f"Checkpoint to load: {ckpt_path} ({exists})",
        "Steps:",
        f"  1. Load {checkpoint}",
        f"  2. Rebuild dataset {cfg.dataset.name} and the run's split "
        f"(validation fraction {t.validation_fraction}, seed {t.seed})",
        "  3. Compute " + (", ".join(wanted) if wanted else "all metrics"),
        f"  4. Write {run_dir / 'eval' / (checkpoint + '.json')} and .md",
        "Dry run: nothing was evaluated or written.",
    ):
        _say(line)
