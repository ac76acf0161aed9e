"""Shared fixtures; every test gets its folder's marker (unit, integration, e2e, acceptance), and
``cuda``-marked tests skip where torch sees no CUDA GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lm_support import TINY_LM, corpus_text

_TESTS = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        kind = Path(str(item.fspath)).relative_to(_TESTS).parts[0]
        if kind in ("unit", "integration", "e2e", "acceptance"):
            item.add_marker(getattr(pytest.mark, kind))
    cuda = [item for item in items if item.get_closest_marker("cuda")]
    if cuda and not _cuda_available():
        for item in cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


def _cuda_available() -> bool:
    """Whether torch sees a CUDA GPU; asked only when a cuda-marked test was collected."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.fixture(autouse=True)
def _release_run_locks() -> Any:
    """Let go of run locks a test left held (a Trainer built and never finished)."""
    yield
    from mlharness.runs import recovery

    for lock in list(recovery._held):
        recovery.release_lock(lock.parent)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean workspace root: the current directory and MLX_WORKSPACE point at tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLX_WORKSPACE", str(tmp_path))
    monkeypatch.delenv("MLX_OVERRIDES", raising=False)
    return tmp_path


@pytest.fixture
def lm_corpus(workspace: Path) -> Path:
    path = workspace / "corpus.txt"
    path.write_text(corpus_text(), encoding="utf-8")
    return path


@pytest.fixture
def tiny_lm(workspace: Path, lm_corpus: Path) -> Any:
    """``tiny_lm(**overrides) -> LMConfig``: a prepared char-level experiment 'tiny'."""
    from mlharness.config import deep_merge
    from mlharness.lm.config import load_lm_config
    from mlharness.lm.prepare import prepare_data

    prepared: set[Path] = set()

    def make(overrides: dict[str, Any] | None = None) -> Any:
        base = deep_merge(TINY_LM, {"prepare": {"preparer": "text", "input": str(lm_corpus)}})
        cfg = load_lm_config(None, "tiny", overrides=deep_merge(base, overrides or {}))
        if cfg.data_dir not in prepared:
            prepare_data(cfg, None, force=True, progress=False)
            prepared.add(cfg.data_dir)
        return cfg

    return make


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any download attempt fails the test, as it would fail on an offline machine."""
    import urllib.request

    from mlharness.lm import prepare

    def download(url: str, dest: Path) -> None:
        pytest.fail(f"prepare tried to download {url}")

    monkeypatch.setattr(prepare, "_download", download)
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("urlopen"))


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, migrated once a session: a new one costs seconds, so
    tests copy this one to where a run looks for its store (tracker_support.place_store)."""
    from tracker_support import migrated_store

    return migrated_store(tmp_path_factory.mktemp("mlflow"))
