"""Weights & Biases for GRPO runs: online when its server answers, offline otherwise.

Offline runs are written under the run's ``logs/wandb`` and can be uploaded later with
``wandb sync``; a training run never waits on, or fails for, the network.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from mlharness.errors import ConfigError
from mlharness.rl.config import RLConfig, config_snapshot


def _online() -> bool:
    """W&B's API host answers within a second, and there is a key to use it with."""
    if not os.environ.get("WANDB_API_KEY") and not (Path.home() / ".netrc").is_file():
        return False
    try:
        socket.create_connection(("api.wandb.ai", 443), timeout=1.0).close()
    except OSError:
        return False
    return True


def start_wandb(config: RLConfig, run_dir: Path, seed: int) -> Any:
    """A started wandb run logging this experiment (``monitoring.use_wandb``)."""
    try:
        import wandb
    except ImportError as exc:
        raise ConfigError(
            'monitoring.use_wandb is true but wandb is not installed: pip install "mlharness[rl]", '
            "or set monitoring.use_wandb = false."
        ) from exc
    m = config.monitoring
    mode = m.wandb_mode if m.wandb_mode != "auto" else ("online" if _online() else "offline")
    directory = run_dir / "logs"
    directory.mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=m.wandb_project,
        name=f"{config.experiment}/{run_dir.name}",
        dir=str(directory),
        mode=mode,
        config={**config_snapshot(config), "resolved_seed": seed},
    )
