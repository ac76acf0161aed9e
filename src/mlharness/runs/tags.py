"""The sweep and trial a run belongs to, handed down by ``mlx sweep`` through the environment.

A sweep starts each trial as an ordinary ``mlx`` process; the environment is the one channel
that reaches every kind's run unchanged (through torchrun too), so the run index, the
trackers and the run's own ``config.json`` can all say which sweep and trial made the run
without any engine knowing about sweeps.
"""

from __future__ import annotations

import os

SWEEP_ENV = "MLX_SWEEP"
TRIAL_ENV = "MLX_SWEEP_TRIAL"


def run_tags() -> dict[str, str]:
    """``{"sweep": NAME, "trial": N}`` for a trial's run, ``{}`` for any other run."""
    sweep = os.environ.get(SWEEP_ENV)
    if not sweep:
        return {}
    tags = {"sweep": sweep}
    trial = os.environ.get(TRIAL_ENV)
    if trial:
        tags["trial"] = trial
    return tags
