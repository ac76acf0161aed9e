"""The pieces of a tabular resume (``mlharness.tabular.resume``): the state on disk, what
counts as the same run, and the reasons given for not resuming one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlharness.tabular import resume
from mlharness.tabular.mlp import MLP


def _model() -> MLP:
    return MLP([3, 4, 1], seed=0, optimizer_config={"optimizer_type": "adam"})


def _state(epoch: int = 2) -> dict[str, object]:
    rng = np.random.default_rng(7)
    rng.permutation(10)
    return {"epoch": epoch, "rng": rng.bit_generator.state, "data": "abc", "checkpoints": []}


def test_write_and_read_a_resume_state(tmp_path: Path) -> None:
    model = _model()
    model.train_step(np.ones((5, 3)), np.zeros(5))
    resume.write_state(tmp_path / "checkpoints", model, _state())
    point = resume.read_point(tmp_path)
    assert point is not None and point.epoch == 2 and point.run_dir == tmp_path
    assert point.path == tmp_path / "checkpoints" / "resume"
    # The generator state survives JSON (its 128-bit integers included).
    rng = np.random.default_rng(0)
    rng.bit_generator.state = point.state["rng"]
    expected = np.random.default_rng(7)
    expected.permutation(10)
    assert np.array_equal(rng.permutation(10), expected.permutation(10))
    loaded = _model()
    loaded.load(point.model_path)
    assert np.array_equal(loaded.weights[0], model.weights[0])
    assert loaded.optimizer.step_count == 1

    resume.write_state(tmp_path / "checkpoints", model, _state(3))  # replaces, keeps one
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["resume"]
    assert resume.read_point(tmp_path).epoch == 3  # type: ignore[union-attr]
    resume.discard(tmp_path / "checkpoints")
    assert resume.read_point(tmp_path) is None
    resume.discard(tmp_path / "checkpoints")  # nothing to discard: no error


@pytest.mark.parametrize(
    "text",
    ["", "{", "[]", '{"format_version": 2, "epoch": 3}', '{"format_version": 1, "epoch": 0}'],
    ids=["empty", "cut-short", "not-an-object", "other-version", "no-epoch"],
)
def test_an_unreadable_state_is_no_resume_point(tmp_path: Path, text: str) -> None:
    state = tmp_path / "checkpoints" / "resume" / "trainer.json"
    state.parent.mkdir(parents=True)
    state.write_text(text)
    assert resume.read_point(tmp_path) is None


def test_fingerprint_sees_values_shapes_and_dtypes() -> None:
    X, y = np.arange(6.0).reshape(3, 2), np.array([0, 1, 0])
    base = resume.fingerprint(X, y)
    assert base == resume.fingerprint(X.copy(), y.copy())
    assert base != resume.fingerprint(X + 1e-12, y)
    assert base != resume.fingerprint(X.reshape(2, 3), y)
    assert base != resume.fingerprint(X, y.astype(np.float64))
    assert base != resume.fingerprint(y, X)


def test_config_changes_name_each_dotted_key() -> None:
    old = {"name": "a", "training": {"epochs": 4, "params": {}}, "model": {"params": {"seed": 1}}}
    new = {"name": "a", "training": {"epochs": 6, "params": {"momentum": 0.9}}, "model": {}}
    assert resume.config_changes(old, new) == [
        "model: (unset) -> {}",
        "model.params.seed: 1 -> (unset)",
        "training.epochs: 4 -> 6",
        "training.params: {} -> (unset)",
        "training.params.momentum: (unset) -> 0.9",
    ]
    assert resume.config_changes(old, json.loads(json.dumps(old))) == []


def _run(tmp_path: Path, config: dict[str, object], epochs: list[int]) -> resume.ResumePoint:
    (tmp_path / "metrics").mkdir(parents=True)
    (tmp_path / "config.json").write_text(json.dumps({**config, "_run": {"seeds": {}}}))
    lines = [json.dumps({"epoch": e, "loss": 1.0}) for e in epochs]
    (tmp_path / "metrics" / "metrics.ndjson").write_text("\n".join(lines) + '\n{"epoch": 9, "lo')
    return resume.ResumePoint(tmp_path, 3, {"data": "d"})


def test_why_not_gives_the_first_reason(tmp_path: Path) -> None:
    config = {"name": "a", "training": {"epochs": 5}}
    point = _run(tmp_path, config, [1, 2, 3, 4])
    assert resume.why_not(tmp_path, point, config, lambda: "d") is None
    assert resume.why_not(tmp_path, point, {**config, "name": "b"}, lambda: "d") == (
        'its config differs from this one (name: "a" -> "b")'
    )
    many = {"name": "b", "training": {"epochs": 6, "seed": 1, "shuffle": False}}
    assert resume.why_not(tmp_path, point, many, lambda: "d") == (
        'its config differs from this one (name: "a" -> "b"; training.epochs: 5 -> 6; '
        "training.seed: (unset) -> 1; ...)"
    )
    assert resume.why_not(tmp_path, point, config, lambda: "e") == (
        "its data differ from what this config loads now (the dataset changed)"
    )
    (tmp_path / "config.json").write_text("[1]")
    assert resume.why_not(tmp_path, point, config, lambda: "d") == "its config.json cannot be read"


def test_why_not_refuses_a_history_with_holes(tmp_path: Path) -> None:
    config = {"name": "a"}
    point = _run(tmp_path, config, [1, 3])
    assert resume.logged_epochs(tmp_path / "metrics", 3) == [1, 3]
    assert resume.why_not(tmp_path, point, config, lambda: "d") == (
        "its metrics.ndjson lacks some of epochs 1 to 3"
    )
