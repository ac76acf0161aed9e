"""The tracker settings every kind shares, their aliases, and the helpers behind them."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from mlharness.config import flatten, validate
from mlharness.errors import ConfigValidationError
from mlharness.runs.trackers import _param_text, call_each
from mlharness.tabular.config import OutputConfig


def rl_raw(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    return {
        "kind": "rl",
        "name": "g",
        "model": {"model_path": str(tmp_path)},
        "data": {"train_path": str(tmp_path / "train.jsonl")},
        "rewards": [{"name": "numeric_match"}],
        **sections,
    }


def test_rl_use_wandb_is_seed_002s_spelling_of_the_wandb_tracker(tmp_path: Path) -> None:
    from mlharness.rl.config import rl_config_from_raw

    monitoring = {"use_wandb": True, "wandb_project": "old", "wandb_mode": "offline"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # seed 002's own field: no warning
        config = rl_config_from_raw(rl_raw(tmp_path, monitoring=monitoring), tmp_path)
    assert config.output.trackers == ["tensorboard", "wandb"]
    assert (config.output.wandb_project, config.output.wandb_mode) == ("old", "offline")

    output = {"trackers": ["wandb"], "wandb_project": "new"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # already a tracker: nothing to say
        again = rl_config_from_raw(rl_raw(tmp_path, monitoring=monitoring, output=output), tmp_path)
    assert (again.output.trackers, again.output.wandb_project) == (["wandb"], "new")


def test_tabular_tensorboard_switch_maps_onto_the_trackers() -> None:
    assert OutputConfig().trackers == ["tensorboard"]
    assert OutputConfig(tensorboard=False).trackers == []
    assert OutputConfig(trackers=["mlflow"], tensorboard=True).trackers == ["mlflow", "tensorboard"]
    assert OutputConfig(trackers=["wandb", "wandb"]).trackers == ["wandb"]


def test_an_unknown_tracker_names_the_ones_there_are() -> None:
    from mlharness.lm.config import LMConfig

    with pytest.raises(ConfigValidationError) as caught:
        validate(LMConfig, {"output": {"trackers": ["neptune"]}})
    assert caught.value.problems == [
        "Invalid value for 'output.trackers.0': Input should be 'tensorboard', 'mlflow' or "
        "'wandb' (got 'neptune')"
    ]


def test_flatten_gives_dotted_paths_and_long_params_are_cut() -> None:
    config = {"a": {"b": 1, "c": {"d": [1, 2]}, "e": {}}, "f": None}
    assert flatten(config) == {"a.b": 1, "a.c.d": [1, 2], "a.e": {}, "f": None}
    assert _param_text([1, 2], 100) == "[1, 2]" and _param_text(None, 100) == "null"
    assert _param_text("x" * 50, 10) == "xxxxxxx..."


class Broken:
    """A tracker whose service went away mid-run."""

    name = "Broken"

    def __init__(self) -> None:
        self.failed = False
        self.calls = 0

    def log(self, metrics: Mapping[str, float], step: int, step_key: str) -> None:
        self.calls += 1
        raise OSError("database is locked")

    def log_table(
        self, name: str, rows: Sequence[Mapping[str, Any]], step: int, step_key: str
    ) -> None:
        raise AssertionError("a stopped tracker is not called again")

    def finish(self, status: str) -> None:
        raise AssertionError("a stopped tracker is not called again")


def test_a_failing_tracker_is_stopped_once_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    broken = Broken()
    with caplog.at_level(logging.WARNING, logger="mlharness.runs.trackers"):
        call_each([broken], "log", {"loss": 1.0}, 1, "epoch")
        call_each([broken], "log_table", "t", [], 1, "epoch")
        call_each([broken], "finish", "completed")
    assert broken.failed and broken.calls == 1
    assert [r.getMessage() for r in caplog.records] == [
        "Broken stopped logging this run (OSError: database is locked); the run's own "
        "metrics files have every record."
    ]
