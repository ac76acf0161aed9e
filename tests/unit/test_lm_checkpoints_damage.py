"""A checkpoint file that exists but is damaged is a CheckpointError naming that file.

A crash, a full disk or a bad copy leaves truncated, empty or garbage files behind; every
loader must say which file is bad and what to do, never let a raw SafetensorError,
JSONDecodeError or EOFError (which click turns into a bare "Aborted.") escape.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from mlharness.errors import CheckpointError  # noqa: E402
from mlharness.lm import checkpoints as ckpt  # noqa: E402
from mlharness.runs import checkpoints as run_ckpt  # noqa: E402

Damage = Callable[[Path], None]


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: min(100, len(data) // 2)])


def _empty(file: Path) -> None:
    file.write_bytes(b"")


def _garbage(file: Path) -> None:
    file.write_bytes(b"this is not a checkpoint file \x00\xff" * 20)


DAMAGES: dict[str, Damage] = {"truncated": _truncate, "empty": _empty, "garbage": _garbage}

LOADERS: dict[str, Callable[[Path], Any]] = {
    ckpt.WEIGHTS_FILE: ckpt.load_weights,
    ckpt.EMA_FILE: lambda path: ckpt.load_weights(path, ema=True),
    ckpt.TRAINER_FILE: run_ckpt.load_trainer_state,
    ckpt.META_FILE: ckpt.read_meta,
}


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A small but complete checkpoint, with EMA weights; no model needs to match it."""
    weights = {"w": torch.randn(64, 64), "b": torch.zeros(64)}
    return ckpt.save_checkpoint(
        tmp_path,
        run_ckpt.checkpoint_name("best", 30, ("val_loss", 3.99581)),
        kind="best",
        iteration=30,
        model_state=weights,
        ema_state={k: v.clone() for k, v in weights.items()},
        trainer_state={"optimizer": {"state": {}, "param_groups": []}, "rng": [torch.zeros(8)]},
        meta={"model_args": {}, "best_val_loss": 3.99581, "config": {}},
    )


def test_an_intact_checkpoint_loads(checkpoint: Path) -> None:
    assert ckpt.read_meta(checkpoint)["iter"] == 30
    assert set(ckpt.load_weights(checkpoint)) == {"w", "b"}
    assert set(ckpt.load_weights(checkpoint, ema=True)) == {"w", "b"}
    assert set(run_ckpt.load_trainer_state(checkpoint)) == {"optimizer", "rng"}


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("file", LOADERS)
def test_a_damaged_file_is_named_with_what_to_do(checkpoint: Path, file: str, damage: str) -> None:
    DAMAGES[damage](checkpoint / file)
    with pytest.raises(CheckpointError) as info:
        LOADERS[file](checkpoint)
    message = str(info.value)
    assert message.startswith(f"Checkpoint file {checkpoint / file} is damaged or truncated (")
    assert message.endswith(
        f"): delete the checkpoint directory {checkpoint} so the one before it is used, or "
        "start a new run with 'mlx train --fresh'."
    )
    assert "\n" not in message


def test_an_empty_trainer_state_is_not_an_eof_error(checkpoint: Path) -> None:
    (checkpoint / ckpt.TRAINER_FILE).write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"trainer\.pt is damaged or truncated \(EOFError\)"):
        run_ckpt.load_trainer_state(checkpoint)


def test_a_truncated_weights_file_names_the_safetensors_complaint(checkpoint: Path) -> None:
    (checkpoint / ckpt.WEIGHTS_FILE).write_bytes(b"\x00" * 8)
    with pytest.raises(CheckpointError, match=r"\(SafetensorError: Error while deserializing"):
        ckpt.load_weights(checkpoint)


def test_checkpoint_json_that_is_not_an_object_is_damaged(checkpoint: Path) -> None:
    (checkpoint / ckpt.META_FILE).write_text("[1, 2, 3]", encoding="utf-8")
    with pytest.raises(
        CheckpointError, match=r"checkpoint\.json is damaged .*\(it holds a JSON list, not an"
    ):
        ckpt.read_meta(checkpoint)


def test_a_trainer_state_that_is_not_a_dict_is_damaged(checkpoint: Path) -> None:
    torch.save([1, 2, 3], checkpoint / ckpt.TRAINER_FILE)
    with pytest.raises(CheckpointError, match=r"trainer\.pt is damaged .*\(it holds a list, not"):
        run_ckpt.load_trainer_state(checkpoint)


@pytest.mark.parametrize("file", [ckpt.WEIGHTS_FILE, ckpt.EMA_FILE, ckpt.TRAINER_FILE])
def test_a_file_missing_at_load_time_is_named(checkpoint: Path, file: str) -> None:
    (checkpoint / file).unlink()
    with pytest.raises(CheckpointError) as info:
        LOADERS[file](checkpoint)
    assert str(info.value) == (
        f"Checkpoint {checkpoint} is incomplete: {file} is missing; delete the checkpoint "
        f"directory {checkpoint} so the one before it is used, or start a new run with "
        "'mlx train --fresh'."
    )


@pytest.mark.parametrize("file", [ckpt.WEIGHTS_FILE, ckpt.TRAINER_FILE, ckpt.META_FILE])
def test_an_unreadable_file_is_named(checkpoint: Path, file: str) -> None:
    (checkpoint / file).unlink()
    (checkpoint / file).mkdir()  # a directory where the file should be: an OSError to read
    with pytest.raises(CheckpointError, match=rf"Cannot read .*{file.replace('.', '[.]')} \("):
        LOADERS[file](checkpoint)


def test_checkpoint_json_without_its_fields_says_what_to_do(checkpoint: Path) -> None:
    (checkpoint / ckpt.META_FILE).write_text('{"schema": 1}', encoding="utf-8")
    with pytest.raises(CheckpointError) as info:
        ckpt.read_meta(checkpoint)
    assert str(info.value) == (
        f"Checkpoint {checkpoint} is incomplete: checkpoint.json lacks kind, iter, model_args, "
        f"best_val_loss, config; delete the checkpoint directory {checkpoint} so the one before "
        "it is used, or start a new run with 'mlx train --fresh'."
    )


def test_an_rl_checkpoints_empty_trainer_state_is_named(tmp_path: Path) -> None:
    # rl checkpoints keep their trainer.pt in the shared layout, read by the same loader
    (tmp_path / ckpt.TRAINER_FILE).write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"trainer\.pt is damaged or truncated \(EOFError"):
        run_ckpt.load_trainer_state(tmp_path)
