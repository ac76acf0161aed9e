"""prepare.tokenizer = "hf:PATH": a local Hugging Face model's own tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from hf_lm_support import hf_model_dir, tiny_text
from mlharness.errors import ConfigError, DatasetError
from mlharness.lm.config import load_lm_config
from mlharness.lm.tokenizers import HFTokenizer, load_tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hf_model_dir(tmp_path_factory.mktemp("hf") / "model", "llama")


def test_encodes_as_the_model_tokenizer_and_rebuilds_from_its_spec(model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = HFTokenizer.load(model_dir)
    reference = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    text = tiny_text()[:5000]
    ids = reference.encode(text, add_special_tokens=False)
    assert tok.encode(text) == ids
    assert np.array_equal(tok.encode_array(text), np.asarray(ids, dtype=np.uint32))
    assert tok.decode(ids) == text and tok.vocab_size == len(reference)
    spec = json.loads(json.dumps(tok.spec()))  # as meta.json stores it
    assert spec["type"] == "hf" and spec["path"] == str(model_dir)
    rebuilt = load_tokenizer(model_dir, {"tokenizer": spec})
    assert isinstance(rebuilt, HFTokenizer) and rebuilt.encode(text) == ids


def test_a_changed_tokenizer_is_found_out(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(model_dir, tmp_path / "copy"))
    spec = HFTokenizer.load(copy).spec()
    config = json.loads((copy / "tokenizer_config.json").read_text())
    (copy / "tokenizer_config.json").write_text(json.dumps({**config, "eos_token": "<pad>"}))
    with pytest.raises(DatasetError, match="changed since this data was prepared"):
        load_tokenizer(copy, {"tokenizer": spec})


def test_a_hub_name_fails_at_once_naming_a_local_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        HFTokenizer.load("Qwen/Qwen2-0.5B")
    message = str(info.value)
    assert 'prepare.tokenizer = "hf:Qwen/Qwen2-0.5B" names no local directory' in message
    assert 'set prepare.tokenizer = "hf:models/Qwen2-0.5B"' in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no tokenizer files"):
        HFTokenizer.load(tmp_path / "empty")


def test_config_takes_hf_paths_relative_to_the_file(tmp_path: Path, model_dir: Path) -> None:
    import shutil

    shutil.copytree(model_dir, tmp_path / "models" / "tiny")
    file = tmp_path / "ft.json"
    file.write_text(
        json.dumps(
            {
                "init_from": "hf:models/tiny",
                "prepare": {"tokenizer": "hf:models/tiny"},
                "lora": {"r": 4},
            }
        )
    )
    cfg = load_lm_config(file, "ft")
    where = tmp_path / "models" / "tiny"
    assert cfg.init_from == f"hf:{where}" and cfg.prepare.tokenizer == f"hf:{where}"
    assert cfg.lora is not None and (cfg.lora.r, cfg.lora.alpha) == (4, 16.0)
    # A hub name stays as written, to be refused with its own name where it is used.
    hub = load_lm_config(None, "ft", overrides={"init_from": "hf:gpt2"})
    assert hub.init_from == "hf:gpt2"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lora": {"r": 4}}, "[lora] trains adapters on a pretrained model, but init_from is"),
        (
            {"init_from": "hf:gpt2", "train": {"ema_decay": 0.9}},
            "train.ema_decay is for GPT runs without [lora]",
        ),
        ({"prepare": {"tokenizer": "hf:"}}, "tokenizer 'hf:' is not known"),
        ({"init_from": "hf:m", "lora": {"rank": 4}}, "rank"),
    ],
)
def test_fine_tuning_settings_are_checked(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_lm_config(None, "ft", overrides=overrides)
    assert message in str(info.value)
