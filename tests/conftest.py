"""Shared fixtures; every test gets its folder's marker (unit, integration, e2e)."""

from __future__ import annotations

from pathlib import Path

import pytest

_TESTS = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        kind = Path(str(item.fspath)).relative_to(_TESTS).parts[0]
        if kind in ("unit", "integration", "e2e"):
            item.add_marker(getattr(pytest.mark, kind))


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean workspace root: the current directory and MLX_WORKSPACE point at tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLX_WORKSPACE", str(tmp_path))
    monkeypatch.delenv("MLX_OVERRIDES", raising=False)
    return tmp_path
