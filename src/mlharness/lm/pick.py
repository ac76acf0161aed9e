"""Which run and checkpoint the lm commands take when none is named: the newest run that has
trained, its best checkpoint, else its last, else a nanoGPT ``ckpt.pt`` (seed 004's order).

Torch-free, so that ``mlx sample`` with nothing to sample fails at once, before the model
code loads (it took 12 s under load).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from mlharness.errors import CheckpointError
from mlharness.lm.config import LMConfig
from mlharness.lm.pretrained import NANOGPT_FILE
from mlharness.runs import checkpoints as run_ckpt
from mlharness.runs.checkpoints import newest_trained_run


def latest_run(config: LMConfig) -> Path:
    """The experiment's newest run with a checkpoint past step 0; says which it passed over.

    A run killed or started moments ago holds only ``ckpt_last_00000000``, the random
    initial weights: sampling it prints gibberish, so it is skipped, never silently.
    Without a trained run, a nanoGPT ``ckpt.pt`` in the experiment's directory (seed 004's
    out_dir) is the legacy fallback.
    """
    parent = config.output_dir / config.experiment
    run_dir, skipped = newest_trained_run(parent)
    if run_dir is None and (parent / NANOGPT_FILE).is_file():
        run_dir = parent
    for passed, why in skipped:
        taken = "and no other run trained"
        if run_dir is not None:
            taken = f"taking {run_dir / NANOGPT_FILE if run_dir == parent else run_dir.name}"
        warnings.warn(f"Skipped run {passed.name}: {why}; {taken}.", UserWarning, stacklevel=2)
    if run_dir is None:
        raise CheckpointError(
            f"No trained run of experiment '{config.experiment}' under {parent}: train one "
            f"first with 'mlx train {config.experiment} --config FILE', or pass --run-dir."
        )
    return run_dir


def sampling_checkpoint(run_dir: Path) -> Path:
    """The best checkpoint, else the last, else a nanoGPT ``ckpt.pt`` in ``run_dir``."""
    try:
        return run_ckpt.pick_for_sampling(run_dir / "checkpoints").path
    except CheckpointError:
        if (run_dir / NANOGPT_FILE).is_file():
            return run_dir / NANOGPT_FILE
    raise CheckpointError(
        f"No checkpoint in {run_dir / 'checkpoints'}: neither ckpt_best_* nor ckpt_last_* "
        f"exists, nor a nanoGPT ckpt.pt in {run_dir}. Train first with 'mlx train', or pass "
        "--checkpoint PATH."
    )
