"""``mlx prepare`` then ``mlx loop`` offline: the loop keeps data made from a local copy,
and an input file given to a generating experiment is an error (in process, so the
downloader can be watched)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from lm_support import TINY_LM
from mlharness.cli import main


def test_loop_after_prepare_from_a_local_copy_skips_prepare(
    workspace: Path, lm_corpus: Path, no_download: None, capsys: pytest.CaptureFixture[str]
) -> None:
    (workspace / "tiny.json").write_text(json.dumps(TINY_LM), encoding="utf-8")
    assert main(["prepare", "shakespeare_char", "--input", str(lm_corpus)]) == 0
    meta = (workspace / "data" / "shakespeare_char" / "meta.json").read_bytes()
    capsys.readouterr()

    code = main(["loop", "shakespeare_char", "--config", "tiny.json", "--set", "train.max_iters=2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "is current; prepare skipped." in out
    assert (workspace / "data" / "shakespeare_char" / "meta.json").read_bytes() == meta


def test_prepare_arithmetic_with_input_is_an_error(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = workspace / "does_not_exist.txt"
    assert main(["prepare", "arithmetic", "--input", str(missing)]) == 1
    assert capsys.readouterr().err == (
        f"Error: The arithmetic experiment generates its problems and takes no input file, "
        f"but {missing} was given: remove --input (or prepare.input from the config) and run "
        "again.\n"
    )
    assert not (workspace / "data" / "arithmetic").exists()
