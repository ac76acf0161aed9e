"""lm/runner.py: huge pages only where a step's logits outgrow the heap; prepare under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlharness.errors import DatasetError
from mlharness.lm.config import load_lm_config
from mlharness.lm.runner import huge_pages_pay, prepare_if_needed


def config_with_vocab(tmp_path: Path, vocab: int | None) -> Path:
    """A GPT-2-recipe-shaped config whose prepared data has ``vocab`` tokens."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    if vocab is not None:
        (data / "meta.json").write_text(json.dumps({"vocab_size": vocab}))
    config = tmp_path / "lm.json"
    config.write_text(
        json.dumps(
            {
                "kind": "lm",
                "name": "text",
                "prepare": {"data_dir": str(data)},
                "model": {"n_layer": 1, "n_head": 1, "n_embd": 8, "block_size": 64},
                "train": {"batch_size": 12, "device": "cpu"},
            }
        )
    )
    return config


@pytest.mark.parametrize(
    ("vocab", "pays"),
    [(50_257, True), (21_846, True), (21_845, False), (4_096, False), (65, False), (None, False)],
)
def test_huge_pages_pay_from_64_mb_of_logits(tmp_path: Path, vocab: int | None, pays: bool) -> None:
    # 12 x 64 x 21,846 float32 logits are just over 64 MiB; unprepared data decides nothing.
    config = load_lm_config(config_with_vocab(tmp_path, vocab), None)
    assert huge_pages_pay(config) is pays


WIRING = """
import os, sys, types
from mlharness.lm import runner
from mlharness.lm.config import load_lm_config
# Stand in for the trainer, which would import torch: report what torch would have seen.
sys.modules["mlharness.lm.trainer"] = types.SimpleNamespace(
    train=lambda config, fresh: (os.environ.get("THP_MEM_ALLOC_ENABLE"), "torch" in sys.modules)
)
runner.check_paths = lambda config: None
print(*runner.train(load_lm_config(sys.argv[1], None)))
"""


@pytest.mark.parametrize(
    ("vocab", "preset", "seen"),
    [(50_257, None, "1"), (65, None, "None"), (50_257, "0", "0")],
    ids=["gpt2-vocab", "char-vocab", "user-setting-wins"],
)
def test_train_sets_huge_pages_before_torch_is_imported(
    tmp_path: Path, vocab: int, preset: str | None, seen: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if preset is not None:
        env["THP_MEM_ALLOC_ENABLE"] = preset
    out = subprocess.run(
        [sys.executable, "-c", WIRING, str(config_with_vocab(tmp_path, vocab))],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert out.stdout.split() == [seen, "False"]


def test_under_torchrun_missing_data_is_prepared_beforehand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "corpus.txt"
    source.write_text("to be or not to be\n" * 50, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLX_WORKSPACE", str(tmp_path))
    config = load_lm_config(None, "text", overrides={"prepare": {"input": str(source)}})
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DatasetError, match="run 'mlx prepare text' first, then start torchrun"):
        prepare_if_needed(config)
    assert not (config.data_dir / "train.bin").exists()  # no process prepared it
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert prepare_if_needed(config) is not None
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert prepare_if_needed(config) is None  # current: every process goes on to train
