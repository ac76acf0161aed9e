"""Sample files keep the checkpoint's full name, and damaged checkpoints fail cleanly in the CLI.

Best checkpoint names end in a metric with a dot (``val_loss_3.9958``), which a suffix swap
would cut off; a damaged checkpoint file must reach the user as ``Error: ...`` naming it,
never as a traceback or a bare ``Aborted.``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from lm_support import TINY_LM  # noqa: E402
from mlharness.cli import main  # noqa: E402
from mlharness.config import deep_merge  # noqa: E402
from mlharness.lm import checkpoints as ckpt  # noqa: E402
from mlharness.lm.sampler import sample, sample_paths  # noqa: E402
from mlharness.lm.trainer import train  # noqa: E402
from mlharness.runs import checkpoints as run_ckpt  # noqa: E402

SHORT = {"train": {"max_iters": 10}}


def test_sample_paths_append_the_suffix_to_a_dotted_checkpoint_name(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt_best_00000030_val_loss_3.9958"
    text, data = sample_paths(tmp_path / "samples", "20261124_084421_367711", checkpoint)
    assert text.name == "20261124_084421_367711_ckpt_best_00000030_val_loss_3.9958.txt"
    assert data.name == "20261124_084421_367711_ckpt_best_00000030_val_loss_3.9958.json"


def test_sampling_writes_files_named_after_the_whole_checkpoint(tiny_lm: Any) -> None:
    cfg = tiny_lm(SHORT)
    run = train(cfg, progress=False).run_dir
    result = sample(cfg)
    name = result.checkpoint.name
    assert name.startswith("ckpt_best_") and "." in name  # e.g. ckpt_best_00000010_val_loss_3.9
    assert result.text_path.parent == run / "samples"
    assert result.text_path.name.endswith(f"_{name}.txt") and result.text_path.is_file()
    assert result.json_path.name == result.text_path.name.removesuffix(".txt") + ".json"
    assert json.loads(result.json_path.read_text())["checkpoint"] == str(result.checkpoint)


def _write_config(workspace: Path) -> str:
    """The tiny_lm experiment as a config file, for the command line."""
    config = deep_merge(
        TINY_LM, {"prepare": {"preparer": "text", "input": str(workspace / "corpus.txt")}}
    )
    config = deep_merge(config, SHORT)
    (workspace / "tiny.json").write_text(json.dumps(config), encoding="utf-8")
    return "tiny.json"


def _assert_clean_error(code: int, err: str, file: Path) -> None:
    assert code == 1, err
    assert err.startswith("Error: Checkpoint file "), err
    assert str(file) in err and "Traceback" not in err and "Aborted." not in err


def test_mlx_sample_names_a_truncated_weights_file(
    tiny_lm: Any, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = train(tiny_lm(SHORT), progress=False).run_dir
    best = run_ckpt.pick_for_sampling(run / "checkpoints").path
    weights = best / ckpt.WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    capsys.readouterr()
    code = main(["sample", "tiny", "--config", _write_config(workspace)])
    _assert_clean_error(code, capsys.readouterr().err, weights)


def test_mlx_train_names_an_empty_trainer_state_on_resume(
    tiny_lm: Any, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = train(tiny_lm(SHORT), progress=False).run_dir
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "status": "failed"}))
    newest = run_ckpt.list_checkpoints(run / "checkpoints")[-1].path
    trainer_state = newest / ckpt.TRAINER_FILE
    trainer_state.write_bytes(b"")  # torch raises EOFError, which click calls "Aborted."
    capsys.readouterr()
    code = main(["train", "tiny", "--config", _write_config(workspace)])
    _assert_clean_error(code, capsys.readouterr().err, trainer_state)
