"""JSON that survives NumPy values and NaN, and atomic file and directory writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mlharness.runs import io as runs_io
from mlharness.runs.io import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    dumps,
    to_jsonable,
)

# --------------------------------------------------------------------------- to_jsonable


@pytest.mark.parametrize(
    ("value", "expected", "kind"),
    [
        (np.float64(0.5), 0.5, float),
        (np.float32(0.25), 0.25, float),
        (np.float16(1.5), 1.5, float),
        (np.int64(3), 3, int),
        (np.int32(-7), -7, int),
        (np.uint8(255), 255, int),
        (np.bool_(True), True, bool),
        (np.array(2.5), 2.5, float),
    ],
)
def test_numpy_scalars_become_python_scalars(value: object, expected: object, kind: type) -> None:
    result = to_jsonable(value)
    assert result == expected
    assert type(result) is kind


def test_numpy_arrays_become_lists() -> None:
    assert to_jsonable(np.array([1, 2])) == [1, 2]
    assert to_jsonable(np.array([[1.5, 2.0], [3.0, 4.5]])) == [[1.5, 2.0], [3.0, 4.5]]
    assert to_jsonable(np.zeros((0, 3))) == []
    nested = to_jsonable(np.arange(4, dtype=np.int64))
    assert all(type(v) is int for v in nested)


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        np.float64("nan"),
        np.float32("inf"),
        np.float64("-inf"),
        np.array(np.nan),
    ],
)
def test_nan_and_inf_become_none(value: object) -> None:
    assert to_jsonable(value) is None


def test_nan_inside_arrays_and_containers_becomes_none() -> None:
    value = {
        "loss": float("nan"),
        "curve": np.array([1.0, np.nan, np.inf, 2.0]),
        "pair": (np.float32(1.0), float("-inf")),
    }
    assert to_jsonable(value) == {
        "loss": None,
        "curve": [1.0, None, None, 2.0],
        "pair": [1.0, None],
    }


def test_paths_tuples_sets_and_keys() -> None:
    assert to_jsonable(Path("runs") / "exp") == os.path.join("runs", "exp")
    assert to_jsonable((1, 2)) == [1, 2]
    assert to_jsonable({3}) == [3]
    assert to_jsonable(frozenset()) == []
    assert to_jsonable({1: "a", np.int64(2): "b"}) == {"1": "a", "2": "b"}


def test_plain_json_values_pass_through() -> None:
    value = {"a": [1, 2.5, "x", True, None, {"b": False}]}
    assert to_jsonable(value) == value


def test_nested_structures() -> None:
    value = {
        "experiment": "exp",
        "metrics": [
            {"epoch": np.int64(1), "loss": np.float64(0.5), "acc": np.float32(0.75)},
            {"epoch": np.int64(2), "loss": np.float64("nan"), "weights": np.eye(2)},
        ],
        "dir": Path("/tmp/x"),
    }
    result = to_jsonable(value)
    assert result == {
        "experiment": "exp",
        "metrics": [
            {"epoch": 1, "loss": 0.5, "acc": 0.75},
            {"epoch": 2, "loss": None, "weights": [[1.0, 0.0], [0.0, 1.0]]},
        ],
        "dir": "/tmp/x",
    }
    assert type(result["metrics"][0]["epoch"]) is int


def test_unserialisable_values_raise_type_error() -> None:
    with pytest.raises(TypeError) as info:
        to_jsonable({"a": object()})
    assert str(info.value) == "Object of type object is not JSON serializable"
    with pytest.raises(TypeError) as info:
        to_jsonable(1 + 2j)
    assert str(info.value) == "Object of type complex is not JSON serializable"


# --------------------------------------------------------------------------- dumps


def test_dumps_writes_strict_json() -> None:
    text = dumps({"loss": float("nan"), "acc": np.float64(0.95), "n": np.int64(3)})
    assert json.loads(text) == {"loss": None, "acc": 0.95, "n": 3}
    assert "NaN" not in text and "Infinity" not in text
    # Strict parsers (no NaN constants) accept it.
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard constant {c}"))


def test_dumps_indent_and_unicode() -> None:
    assert dumps({"a": 1}) == '{\n  "a": 1\n}'
    assert dumps({"a": [1, 2]}, indent=None) == '{"a": [1, 2]}'
    assert dumps({"name": "räksmörgås λ"}, indent=None) == '{"name": "räksmörgås λ"}'


def test_dumps_round_trips_floats_exactly() -> None:
    values = [0.1, 1 / 3, 1e-300, 123456789.123456789, np.float64(2) ** 0.5]
    assert json.loads(dumps(values)) == [float(v) for v in values]


# --------------------------------------------------------------------------- atomic files


def _temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_json_and_text(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "dir" / "summary.json"  # parents are created
    atomic_write_json(target, {"status": "completed", "loss": np.float64("nan")})
    assert target.read_text(encoding="utf-8") == '{\n  "status": "completed",\n  "loss": null\n}\n'
    atomic_write_text(tmp_path / "notes.md", "# Hi ✓\n")
    assert (tmp_path / "notes.md").read_text(encoding="utf-8") == "# Hi ✓\n"
    atomic_write_bytes(tmp_path / "blob", b"\x00\x01")
    assert (tmp_path / "blob").read_bytes() == b"\x00\x01"
    assert _temp_files(tmp_path) == []
    assert _temp_files(target.parent) == []


def test_atomic_write_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "index.json"
    atomic_write_json(target, {"runs": [1]})
    atomic_write_json(target, {"runs": [1, 2]})
    assert json.loads(target.read_text(encoding="utf-8")) == {"runs": [1, 2]}
    assert _temp_files(tmp_path) == []


def test_failed_rename_keeps_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"old": True})

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(runs_io.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_json(target, {"new": True})
    assert json.loads(target.read_text(encoding="utf-8")) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_failed_write_keeps_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old\n")

    def broken_fsync(fd: int) -> None:
        raise OSError("fsync failed")

    monkeypatch.setattr(runs_io.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="fsync failed"):
        atomic_write_text(target, "new\n")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_non_serialisable_value_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
        atomic_write_json(target, {"a": object()})
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_keyboard_interrupt_during_write_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "x.json"

    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(runs_io.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(target, {"a": 1})
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- atomic directories


def test_atomic_directory_creates_the_target(tmp_path: Path) -> None:
    target = tmp_path / "checkpoints" / "checkpoint_final"
    with atomic_directory(target) as tmp:
        assert tmp.parent == target.parent
        assert not target.exists()  # nothing visible until the block succeeds
        (tmp / "model.json").write_text("{}", encoding="utf-8")
        (tmp / "nested").mkdir()
        (tmp / "nested" / "w.npz").write_bytes(b"x")
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "model.json",
        "nested",
        "nested/w.npz",
    ]
    assert sorted(p.name for p in target.parent.iterdir()) == ["checkpoint_final"]


def test_atomic_directory_replaces_an_existing_directory(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old.txt").write_text("old", encoding="utf-8")
    (target / "shared.txt").write_text("old", encoding="utf-8")
    with atomic_directory(target) as tmp:
        (tmp / "shared.txt").write_text("new", encoding="utf-8")
    assert sorted(p.name for p in target.iterdir()) == ["shared.txt"]
    assert (target / "shared.txt").read_text(encoding="utf-8") == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no .old or .tmp left


def test_atomic_directory_exception_leaves_nothing_new(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), atomic_directory(tmp_path / "ckpt") as tmp:
        (tmp / "half.bin").write_bytes(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_exception_keeps_the_old_directory(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "model.json").write_text('{"v": 1}', encoding="utf-8")
    with pytest.raises(KeyboardInterrupt), atomic_directory(target) as tmp:
        (tmp / "model.json").write_text('{"v": 2}', encoding="utf-8")
        raise KeyboardInterrupt
    assert (target / "model.json").read_text(encoding="utf-8") == '{"v": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_atomic_directory_cleans_a_stale_trash_directory(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    target.mkdir()
    stale = tmp_path / ".ckpt.old"
    stale.mkdir()
    (stale / "junk").write_text("x", encoding="utf-8")
    with atomic_directory(target) as tmp:
        (tmp / "a").write_text("a", encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert [p.name for p in target.iterdir()] == ["a"]


def test_failed_swap_puts_the_old_directory_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "model.json").write_text('{"v": 1}', encoding="utf-8")
    real_replace = os.replace
    calls: list[tuple[str, str]] = []

    def replace(src: str, dst: str) -> None:
        calls.append((Path(src).name, Path(dst).name))
        if Path(src).name.endswith(".tmp") and Path(dst).name == "ckpt":  # the new one moving in
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(runs_io.os, "replace", replace)
    with pytest.raises(OSError, match="rename failed"), atomic_directory(target) as tmp:
        (tmp / "model.json").write_text('{"v": 2}', encoding="utf-8")
    assert ("ckpt", ".ckpt.old") in calls  # the old one was moved aside first
    assert (target / "model.json").read_text(encoding="utf-8") == '{"v": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
