"""What the lm commands do, in order: prepare, train, sample, and the loop of all three.

The CLI calls these and prints; ``mlx loop`` and ``mlx run-experiment`` on an lm config run
prepare_if_needed, train and sample in turn.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from mlharness.config.paths import ensure_within_workspace
from mlharness.errors import DatasetError
from mlharness.lm.config import LMConfig
from mlharness.lm.meta import load_meta
from mlharness.lm.pick import latest_run
from mlharness.lm.prepare import PrepareReport, artifacts_current, prepare_data

if TYPE_CHECKING:
    from mlharness.lm.sampler import SampleResult
    from mlharness.lm.trainer import TrainResult


def check_paths(config: LMConfig) -> None:
    """Runs are written inside the workspace only (as for tabular runs)."""
    ensure_within_workspace(config.output_dir, "output.directory")


def plan(config: LMConfig, *, sample: bool = True) -> list[str]:
    t, m = config.train, config.model
    shape = f"{m.n_layer} layers, {m.n_head} heads, {m.n_embd} wide, context {m.block_size}"
    if config.init_from != "scratch":
        shape = f"starting from {config.init_from}, its shape"
    steps = [
        f"Prepare {config.preparer} data into {config.data_dir} unless it is current",
        f"Train a GPT ({shape}) for {t.max_iters} iterations of "
        f"{t.batch_size}x{t.grad_accum_steps} sequences, lr {t.learning_rate} -> {t.min_lr}, "
        f"device {t.device}",
        f"Write the run under {config.output_dir / config.experiment}/<timestamp>/, resuming "
        "the latest unfinished run of this experiment",
    ]
    if sample:
        steps.append(
            f"Sample {config.sample.num_samples} x {config.sample.max_new_tokens} tokens from "
            "the best checkpoint (else the last)"
        )
    return steps


def prepare(config: LMConfig, input_path: Path | None = None, force: bool = True) -> PrepareReport:
    return prepare_data(config, input_path, force=force)


def huge_pages_pay(config: LMConfig) -> bool:
    """Whether this run's logits outgrow the heap (``LMConfig.logits_outgrow_heap``).

    Transparent huge pages then make their page faults 512x fewer and the step 1.4x
    faster; for smaller tensors they gain nothing and cost memory (+20% peak at a
    4,096-token vocabulary), so they are asked for only here.
    """
    try:
        vocab = int(load_meta(config.data_dir)["vocab_size"])
    except (DatasetError, KeyError, TypeError, ValueError):
        return False
    return config.logits_outgrow_heap(vocab)


def train(config: LMConfig, *, fresh: bool = False) -> TrainResult:
    # torch reads THP_MEM_ALLOC_ENABLE once, at its first allocation: set it before the
    # import, and never over the user's own setting.
    if "torch" not in sys.modules and huge_pages_pay(config):
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    from mlharness.lm.trainer import train as run_training

    check_paths(config)
    return run_training(config, fresh=fresh)


def sample(
    config: LMConfig,
    *,
    run_dir: Path | None = None,
    checkpoint: Path | None = None,
    out: TextIO | None = None,
) -> SampleResult:
    if run_dir is None and checkpoint is None:
        run_dir = latest_run(config)  # before the model code loads: nothing trained fails fast
    from mlharness.lm.sampler import sample as run_sampling

    return run_sampling(config, run_dir=run_dir, checkpoint=checkpoint, out=out)


def prepare_if_needed(config: LMConfig, input_path: Path | None = None) -> PrepareReport | None:
    """Prepare unless the artifacts exist and match the source (seed 004's loop rule)."""
    if artifacts_current(config, input_path):
        return None  # the caller says so
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise DatasetError(
            f"The data in {config.data_dir} is missing or out of date, and under torchrun every "
            f"process would prepare it at once: run 'mlx prepare {config.experiment}' first, "
            "then start torchrun again."
        )
    return prepare_data(config, input_path, force=True)
