"""Every config shipped in experiments/ and examples/ passes ``mlx run-experiment --dry-run``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from e2e_helpers import REPO, Mlx, snapshot

SUFFIXES = (".json", ".yaml", ".yml", ".toml")
SHIPPED = sorted(
    p.relative_to(REPO).as_posix()
    for folder in ("experiments", "examples")
    for p in (REPO / folder).glob("*")
    if p.suffix in SUFFIXES
)


def test_there_are_shipped_configs() -> None:
    assert "experiments/example.json" in SHIPPED
    assert "examples/linear_regression_config.json" in SHIPPED


@pytest.mark.parametrize("config", SHIPPED)
def test_shipped_config_dry_runs(mlx: Mlx, ws: Path, config: str) -> None:
    for folder in ("experiments", "examples"):
        shutil.copytree(REPO / folder, ws / folder)
    if config == "experiments/grpo_arithmetic.yaml":
        # Its dry run checks that the base model and prompts exist: make them the quick way
        # (the prompts for real, a tiny random model standing in for the base GPT's run).
        from mlharness.rl.tiny_models import build_tiny_model

        mlx("prepare", "--config", "experiments/arithmetic_base.toml", check=0)
        build_tiny_model(ws / "runs" / "arithmetic_base")
    before = snapshot(ws)
    result = mlx("run-experiment", "--dry-run", "--config", config, check=0)
    count = result.stdout.count("Validation: OK (")
    assert count >= 1
    assert f"Dry run: {count} experiment(s) valid; nothing was written." in result.stdout
    assert "Warning" not in result.stderr, "a shipped config should not need a warning"
    assert snapshot(ws) == before


def test_python_api_example_script_runs(ws: Path) -> None:
    """examples/train_linear_regression.py: the seed's Python training flow, for real."""
    import os
    import subprocess
    import sys

    script = ws / "train_linear_regression.py"
    shutil.copy(REPO / "examples" / "train_linear_regression.py", script)
    env = {k: v for k, v in os.environ.items() if k != "MLX_OVERRIDES"}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=ws, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "Training completed: completed" in result.stdout
    run_dir = ws / result.stdout.split("Run directory: ")[1].strip()
    assert (run_dir / "checkpoints" / "checkpoint_final" / "model.json").is_file()
    assert (run_dir / "metrics" / "metrics.json").is_file()
    assert (ws / "runs" / "index.json").is_file()
