"""The lm engine's side of the run contract (:class:`mlharness.runs.engine.Engine`), and the
lines the lm commands print about what they did.

torch is imported only when a function trains, samples or evaluates.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlharness.lm.config import LM_METRICS, LMConfig, lm_config_from_raw, load_lm_config
from mlharness.runs.engine import EvalRequest

if TYPE_CHECKING:
    from mlharness.lm.prepare import PrepareReport
    from mlharness.lm.trainer import TrainResult

METRICS = LM_METRICS


def leads() -> bool:
    """Whether this process reports: under torchrun only rank 0 does (it alone writes the run)."""
    return os.environ.get("RANK", "0") == "0"


def _say(text: str) -> None:
    if leads():
        print(text, flush=True)


def load(path: Path, set_items: Sequence[str], strict: bool) -> LMConfig:
    return load_lm_config(path, None, set_items=list(set_items), strict=strict)


def from_raw(raw: Mapping[str, Any], source: Path, strict: bool) -> LMConfig:
    return lm_config_from_raw(raw, source.expanduser().resolve().parent, strict=strict)


def check(config: LMConfig) -> None:
    from mlharness.lm import runner

    runner.check_paths(config)


def plan(config: LMConfig) -> list[str]:
    from mlharness.lm import runner

    return runner.plan(config)


def train(config: LMConfig, *, fresh: bool = False) -> str:
    """``mlx loop``: prepare unless the data is current, train (resuming), then sample."""
    return loop(config, None, fresh)


def loop(config: LMConfig, input_path: Path | None = None, fresh: bool = False) -> str:
    from mlharness.lm import runner

    runner.check_paths(config)
    report = runner.prepare_if_needed(config, input_path)
    if report is None:
        _say(f"Data in {config.data_dir} is current; prepare skipped.")
    else:
        report_prepare(report)
    result = train_and_report(config, fresh)
    if result.status != "interrupted" and leads():
        sample_and_report(config, result.run_dir, None)
    return result.status


def report_prepare(report: PrepareReport) -> None:
    print(
        f"Prepared {report.train_tokens:,} train and {report.val_tokens:,} val tokens "
        f"(vocabulary {report.vocab_size:,}, {report.dtype}) in {report.data_dir} "
        f"[{report.seconds:.2f} s]",
        flush=True,
    )


def train_and_report(config: LMConfig, fresh: bool) -> TrainResult:
    """Train (or resume) and say how it went; an interrupted run says how to resume."""
    from mlharness.lm import runner

    _say(f"Experiment: {config.experiment}")
    result = runner.train(config, fresh=fresh)
    if result.resumed_from is not None:
        _say(f"Resumed from {result.resumed_from}")
    val = result.final_metrics.get("val_loss")
    _say(
        f"Training {result.status} at iteration {result.iterations}"
        + (f": val loss {val:.4f}, best {result.best_val_loss:.4f}" if val is not None else "")
    )
    _say(f"Run directory: {result.run_dir}")
    if result.status == "interrupted":
        _say("Interrupted: run 'mlx train' again to resume from the last checkpoint.")
    return result


def sample_and_report(config: LMConfig, run_dir: Path | None, checkpoint: Path | None) -> None:
    """Stream samples to stdout, then say where they were written."""
    from mlharness.lm import runner

    result = runner.sample(config, run_dir=run_dir, checkpoint=checkpoint, out=sys.stdout)
    print(f"\nCheckpoint: {result.checkpoint}", flush=True)
    print(
        f"Samples written: {result.text_path} ({result.tokens_per_sec:,.0f} tokens/s)", flush=True
    )


def evaluate(request: EvalRequest) -> None:
    """Loss and perplexity of a checkpoint (default: best, else last) on the run's data."""
    run_dir = request.existing_run_dir()
    if request.dry_run:
        _eval_plan(run_dir, request.checkpoint)
        return
    from mlharness.lm import evaluate as lm_eval

    report = lm_eval.evaluate(run_dir, request.checkpoint)
    print(report["markdown"], flush=True)
    print("Written: " + ", ".join(report["files"]), flush=True)


def _eval_plan(run_dir: Path, checkpoint: str | None) -> None:
    """What ``mlx eval --dry-run`` would score, found without loading torch."""
    from mlharness.runs import checkpoints as run_ckpt

    if checkpoint is None:
        chosen = run_ckpt.pick_for_sampling(run_dir / "checkpoints").path
    else:
        named = Path(checkpoint)
        chosen = named if named.is_dir() else run_dir / "checkpoints" / checkpoint
    found = "found" if (chosen / run_ckpt.META_FILE).is_file() else "NOT FOUND"
    for line in (
        f"Checkpoint to load: {chosen} ({found})",
        "Splits: train and val of the run's prepared data (loss and perplexity)",
        f"Would write: {run_dir / 'eval' / (chosen.name + '.json')} and .md",
        "Dry run: nothing was evaluated or written.",
    ):
        print(line, flush=True)
