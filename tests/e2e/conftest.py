"""Fixtures of the end-to-end tests: the real ``mlx`` command in a subprocess.

``ws`` is a fresh workspace (``tmp_path/ws`` with a ``pyproject.toml``; one level down, so
``../outside`` is still inside the test's own tmp_path). ``mlx`` runs the command there:

    result = mlx("run-experiment", "--config", "c.json", check=0)

``trained_session`` trains a regression and a classification run once per session;
``trained`` is a private copy of them for tests that write into a run directory.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # e2e_helpers, whatever the import mode

from e2e_helpers import (
    CLASSIFICATION,
    REGRESSION,
    Mlx,
    Trained,
    make_workspace,
    run_mlx,
    single_run_dir,
    write_config,
)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A fresh workspace root: the command's current directory and MLX_WORKSPACE."""
    return make_workspace(tmp_path / "ws")


@pytest.fixture
def mlx(ws: Path) -> Mlx:
    """``mlx(*args, check=None, env=None, entry="module") -> CompletedProcess`` in ``ws``."""
    return Mlx(ws)


@pytest.fixture(scope="session")
def trained_session(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Train once: regression from JSON through the ``mlx`` script, classification from YAML.

    Tests that only read these runs use this fixture directly.
    """
    workspace = make_workspace(tmp_path_factory.mktemp("trained") / "ws")
    write_config(workspace / "regression.json", REGRESSION)
    write_config(workspace / "classification.yaml", CLASSIFICATION)
    result = run_mlx(
        ["run-experiment", "--config", "regression.json"],
        workspace=workspace,
        check=0,
        entry="script",
    )
    run_mlx(["run-experiment", "--config", "classification.yaml"], workspace=workspace, check=0)
    return Trained(
        workspace,
        single_run_dir(workspace, REGRESSION["name"]),
        single_run_dir(workspace, CLASSIFICATION["name"]),
        result,
    )


@pytest.fixture
def trained(trained_session: Trained, ws: Path) -> Trained:
    """A private copy of the trained workspace in this test's ``ws``, free to write into."""
    src = trained_session.workspace
    for item in src.iterdir():
        if item.is_dir():
            shutil.copytree(item, ws / item.name)
        elif item.name != "pyproject.toml":
            shutil.copy2(item, ws / item.name)
    return Trained(
        ws,
        ws / trained_session.regression_run.relative_to(src),
        ws / trained_session.classification_run.relative_to(src),
        trained_session.regression_result,
    )
