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
    before = snapshot(ws)
    result = mlx("run-experiment", "--dry-run", "--config", config, check=0)
    count = result.stdout.count("Validation: OK (")
    assert count >= 1
    assert f"Dry run: {count} experiment(s) valid; nothing was written." in result.stdout
    assert "Warning" not in result.stderr, "a shipped config should not need a warning"
    assert snapshot(ws) == before
