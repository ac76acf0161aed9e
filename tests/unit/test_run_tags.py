"""A sweep's trial runs say which sweep and trial made them; other runs say nothing."""

from __future__ import annotations

import json

import pytest

from mlharness.runs.output import OutputManager
from mlharness.runs.tags import SWEEP_ENV, TRIAL_ENV, run_tags


def test_no_sweep_no_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SWEEP_ENV, raising=False)
    assert run_tags() == {}


def test_a_trial_run_is_tagged_in_the_index_and_its_config(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SWEEP_ENV, "lr-search")
    monkeypatch.setenv(TRIAL_ENV, "7")
    out = OutputManager("exp", base_dir=tmp_path)
    out.write_config({"a": 1})
    entry = json.loads((tmp_path / "index.json").read_text())["runs"][0]
    assert (entry["sweep"], entry["trial"]) == ("lr-search", "7")
    run = json.loads((out.run_dir / "config.json").read_text())["_run"]
    assert (run["sweep"], run["trial"]) == ("lr-search", "7")
