"""Which run the lm commands take when none is named: the newest one that has trained.

Torch-free, so that ``mlx sample`` with nothing to sample fails at once, before the model
code loads (it took 12 s under load).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from mlharness.errors import CheckpointError
from mlharness.lm.config import LMConfig
from mlharness.runs.checkpoints import newest_trained_run


def latest_run(config: LMConfig) -> Path:
    """The experiment's newest run with a checkpoint past step 0; says which it passed over.

    A run killed or started moments ago holds only ``ckpt_last_00000000``, the random
    initial weights: sampling it prints gibberish, so it is skipped, never silently.
    """
    parent = config.output_dir / config.experiment
    run_dir, skipped = newest_trained_run(parent)
    for passed, why in skipped:
        taken = f"taking {run_dir.name}" if run_dir is not None else "and no other run trained"
        warnings.warn(f"Skipped run {passed.name}: {why}; {taken}.", UserWarning, stacklevel=2)
    if run_dir is None:
        raise CheckpointError(
            f"No trained run of experiment '{config.experiment}' under {parent}: train one "
            f"first with 'mlx train {config.experiment} --config FILE', or pass --run-dir."
        )
    return run_dir
