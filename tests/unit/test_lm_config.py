"""The lm config: defaults, merge order, relative paths and every validation message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlharness.errors import ConfigError, ConfigValidationError
from mlharness.lm.config import LMConfig, load_lm_config


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_then_experiment_defaults_then_file_then_overrides(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg_file = _write(workspace / "c.toml", "[train]\nmax_iters = 7\nbatch_size = 3\n")
    monkeypatch.setenv("MLX_OVERRIDES", json.dumps({"train": {"batch_size": 5}}))
    cfg = load_lm_config(cfg_file, "shakespeare", set_items=["model.n_layer=2"])
    assert cfg.name == "shakespeare"
    assert cfg.prepare.tokenizer == "tiktoken:gpt2"  # the experiment's packaged default
    assert cfg.train.max_iters == 7  # the file
    assert cfg.train.batch_size == 5  # MLX_OVERRIDES over the file
    assert cfg.model.n_layer == 2  # --set last
    assert cfg.model.n_embd == LMConfig().model.n_embd  # package default


def test_relative_paths_resolve_against_the_config_file(workspace: Path) -> None:
    sub = workspace / "configs"
    sub.mkdir()
    cfg_file = _write(
        sub / "c.toml",
        '[prepare]\ninput = "../text.txt"\ndata_dir = "d"\n[output]\ndirectory = "out"\n'
        '[sample]\nstart = "FILE:prompt.txt"\n',
    )
    cfg = load_lm_config(cfg_file, "text")
    assert cfg.prepare.input == workspace / "text.txt"
    assert cfg.data_dir == sub / "d"
    assert cfg.output_dir == sub / "out"
    assert cfg.sample.start == f"FILE:{sub / 'prompt.txt'}"


def test_default_locations_are_in_the_workspace(workspace: Path) -> None:
    cfg = load_lm_config(None, "shakespeare_char")
    assert cfg.data_dir == workspace / "data" / "shakespeare_char"
    assert cfg.output_dir == workspace / "runs"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model": {"n_embd": 30, "n_head": 4}}, "n_embd (30) must be a multiple of n_head (4)"),
        ({"prepare": {"tokenizer": "wordpiece"}}, "tokenizer 'wordpiece' is not known"),
        ({"train": {"min_lr": 1.0}}, "min_lr (1.0) must not exceed learning_rate (0.001)"),
        ({"train": {"checkpointing": {"keep": {"last": -1}}}}, "keep.last"),
        ({"train": {"device": "tpu"}}, "train.device"),
        ({"train": {"dtype": "float16"}}, "'auto', 'float32' or 'bfloat16' (got 'float16')"),
    ],
)
def test_invalid_values_are_reported(
    workspace: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigValidationError, match="Configuration validation failed") as info:
        load_lm_config(None, "shakespeare_char", overrides=overrides)
    assert message in str(info.value)


def test_unknown_keys_are_errors_with_a_suggestion(workspace: Path) -> None:
    """Seeds 001/004: strict. A typo'd key or section never trains on the defaults."""
    cfg_file = _write(workspace / "c.toml", "[train]\nmax_iter = 5\n")
    for strict in (False, True):
        with pytest.raises(ConfigValidationError, match=r"'max_iter' in 'train' .* 'max_iters'"):
            load_lm_config(cfg_file, "shakespeare_char", strict=strict)
    section = _write(workspace / "s.toml", "[trian]\nmax_iters = 5\n")
    with pytest.raises(ConfigValidationError, match="'trian' \\(did you mean 'train'\\?\\)"):
        load_lm_config(section, "shakespeare_char")


def test_name_rules(workspace: Path) -> None:
    cfg_file = _write(workspace / "c.toml", 'name = "other"\n')
    with pytest.raises(
        ConfigError,
        match="The config names experiment 'other' but the command says 'shakespeare_char'",
    ):
        load_lm_config(cfg_file, "shakespeare_char")
    with pytest.raises(ConfigError, match="has no `name` and no EXPERIMENT was given"):
        load_lm_config(None, None)
    assert load_lm_config(cfg_file, None).name == "other"


def test_a_list_is_refused(workspace: Path) -> None:
    cfg_file = _write(workspace / "c.json", "[{}, {}]")
    with pytest.raises(ConfigError, match="must hold one lm experiment"):
        load_lm_config(cfg_file, "x")
