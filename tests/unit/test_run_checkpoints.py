"""Checkpoint names, listing, rotation and choice (runs/checkpoints.py) on real directories.

Resume takes the newest checkpoint, sampling the best one and rotation deletes the oldest:
a wrong order or an off-by-one here silently resumes from, samples or deletes the wrong
weights, so each rule is pinned on directories laid out as training leaves them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mlharness.errors import CheckpointError
from mlharness.runs import checkpoints as ckpt

pytestmark = pytest.mark.unit


def _make(directory: Path, *names: str) -> None:
    for name in names:
        (directory / name).mkdir(parents=True)


def _names(infos: list[ckpt.CheckpointInfo]) -> list[str]:
    return [info.path.name for info in infos]


def test_names_carry_kind_iteration_and_metric() -> None:
    assert ckpt.checkpoint_name("last", 7) == "ckpt_last_00000007"
    best = ckpt.checkpoint_name("best", 250, ("val/loss", 1.88604))
    assert best == "ckpt_best_00000250_val_loss_1.8860"


def test_listing_orders_by_iteration_and_skips_what_is_not_a_checkpoint(tmp_path: Path) -> None:
    _make(
        tmp_path,
        "ckpt_last_00000300",
        "ckpt_best_00000020_val_loss_2.0000",
        "ckpt_last_00000020",
        "ckpt_best_00000100_val_loss_1.5000",
        ".ckpt_last_00000400.1a2b3c4d.tmp",  # a rotation cut short
        "ckpt_last_500",  # not eight digits
        "notes",
    )
    (tmp_path / "ckpt_last_00000600").write_text("a file, not a checkpoint")
    found = ckpt.list_checkpoints(tmp_path)
    assert _names(found) == [
        "ckpt_best_00000020_val_loss_2.0000",  # at one iteration the best comes first
        "ckpt_last_00000020",
        "ckpt_best_00000100_val_loss_1.5000",
        "ckpt_last_00000300",
    ]
    assert [(c.kind, c.iter) for c in found][-1] == ("last", 300)
    assert _names(ckpt.list_checkpoints(tmp_path, "best")) == _names(found)[::2]
    assert ckpt.list_checkpoints(tmp_path / "absent") == []


def test_newest_checkpoint_prefers_the_last_one_at_the_same_iteration(tmp_path: Path) -> None:
    assert ckpt.newest_checkpoint(tmp_path) is None
    _make(
        tmp_path / "checkpoints",
        "ckpt_last_00000020",
        "ckpt_best_00000050_val_loss_1.0000",
        "ckpt_last_00000050",
    )
    newest = ckpt.newest_checkpoint(tmp_path)
    assert newest is not None and newest.path.name == "ckpt_last_00000050"


def test_sampling_takes_the_newest_best_over_a_later_last(tmp_path: Path) -> None:
    _make(tmp_path, "ckpt_last_00000010", "ckpt_last_00000020", "ckpt_last_00000030")
    assert ckpt.pick_for_sampling(tmp_path).path.name == "ckpt_last_00000030"
    bests = [f"ckpt_best_{i:08d}_val_loss_{3 - i / 10:.4f}" for i in (5, 10, 20)]
    _make(tmp_path, *bests)
    assert ckpt.pick_for_sampling(tmp_path).path.name == bests[-1]


def test_sampling_with_no_checkpoint_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"^No checkpoint in .*Train first with 'mlx train'"):
        ckpt.pick_for_sampling(tmp_path)


def test_rotation_deletes_the_oldest_of_its_kind_only(tmp_path: Path) -> None:
    lasts = [f"ckpt_last_{i:08d}" for i in (10, 20, 30, 40)]
    _make(tmp_path, *lasts, "ckpt_best_00000005_val_loss_3.0000")
    ckpt.rotate(tmp_path, "last", keep=4)
    assert len(ckpt.list_checkpoints(tmp_path)) == 5
    ckpt.rotate(tmp_path, "last", keep=2)
    assert _names(ckpt.list_checkpoints(tmp_path)) == [
        "ckpt_best_00000005_val_loss_3.0000",
        *lasts[2:],
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ckpt_best_00000005_val_loss_3.0000", *lasts[2:]]
    )


def test_newest_trained_run_passes_over_untrained_runs_and_says_why(tmp_path: Path) -> None:
    _make(tmp_path / "run-1" / "checkpoints", "ckpt_last_00000100")
    _make(tmp_path / "run-2" / "checkpoints", "ckpt_last_00000000")
    (tmp_path / "run-3").mkdir()
    run, skipped = ckpt.newest_trained_run(tmp_path)
    assert run == tmp_path / "run-1"
    assert skipped == [
        (tmp_path / "run-3", "it has no checkpoint"),
        (tmp_path / "run-2", "it holds only its initial checkpoint (step 0)"),
    ]
    assert ckpt.newest_trained_run(tmp_path / "absent") == (None, [])


def test_a_damage_reason_keeps_the_first_sentence_within_100_characters(tmp_path: Path) -> None:
    two = ckpt.damaged(tmp_path, "trainer.pt", ValueError("Bad magic number. Then a paragraph."))
    assert "(ValueError: Bad magic number)" in str(two)
    fits = "x" * 100
    assert f"(OSError: {fits})" in str(ckpt.damaged(tmp_path, "f", OSError(fits)))
    long = str(ckpt.damaged(tmp_path, "f", OSError("y" * 101)))
    assert f"(OSError: {'y' * 97}...)" in long
    assert "(EOFError)" in str(ckpt.damaged(tmp_path, "f", EOFError()))


def _tied_model() -> torch.nn.Module:
    """An embedding and an output layer sharing one matrix, as GPT's lm_head does."""
    model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False))
    model[1].weight = model[0].weight
    return model


def test_a_tied_matrix_is_stored_once_and_loads_into_both_places(tmp_path: Path) -> None:
    model = _tied_model()
    ckpt.save_weights(model.state_dict(), tmp_path / ckpt.WEIGHTS_FILE)
    stored = ckpt.load_weights(tmp_path)
    assert list(stored) == ["0.weight"]
    fresh = _tied_model()
    ckpt.load_into(fresh, stored)
    assert torch.equal(fresh[1].weight, model[0].weight)


def test_loading_refuses_missing_extra_and_misshapen_tensors() -> None:
    untied = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    state = untied.state_dict()
    with pytest.raises(CheckpointError, match=r"lacks tensors: 1\.bias\.$"):
        ckpt.load_into(untied, {k: v for k, v in state.items() if k != "1.bias"})
    with pytest.raises(CheckpointError, match=r"does not have: 2\.weight\.$"):
        ckpt.load_into(untied, {**state, "2.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"1\.bias has shape \(3,\) but the model expects"):
        ckpt.load_into(untied, {**state, "1.bias": torch.zeros(3)})


def test_an_unreadable_file_is_named_with_the_system_reason(tmp_path: Path) -> None:
    (tmp_path / ckpt.TRAINER_FILE).mkdir()
    (tmp_path / ckpt.META_FILE).mkdir()
    expected = r" \(Is a directory\): check that it is a readable file\.$"
    with pytest.raises(CheckpointError, match=rf"^Cannot read .*{ckpt.TRAINER_FILE}{expected}"):
        ckpt.load_trainer_state(tmp_path)
    with pytest.raises(CheckpointError, match=rf"^Cannot read .*{ckpt.META_FILE}{expected}"):
        ckpt.read_checkpoint_json(tmp_path)
