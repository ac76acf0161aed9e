"""Reading nanoGPT checkpoints and meta.pkl safely, mapping their names, and fitting a source
model to a new run (lm/pretrained.py)."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from lm_support import nanogpt_state_dict, write_nanogpt_checkpoint  # noqa: E402
from mlharness.errors import CheckpointError, ConfigValidationError, DatasetError  # noqa: E402
from mlharness.lm import pretrained  # noqa: E402
from mlharness.lm.config import load_lm_config  # noqa: E402
from mlharness.lm.model import GPT, GPTConfig  # noqa: E402
from mlharness.runs.checkpoints import load_into  # noqa: E402

ARGS = {
    "n_layer": 2,
    "n_head": 2,
    "n_embd": 16,
    "block_size": 8,
    "bias": True,
    "vocab_size": 12,
    "dropout": 0.0,
}
CHARS = "\n abcdefghij"


def test_nanogpt_names_map_onto_our_gpt() -> None:
    raw = nanogpt_state_dict(ARGS)
    state = pretrained.nanogpt_state(raw, Path("ckpt.pt"))
    model = GPT(GPTConfig(**ARGS))
    load_into(model, state)  # refuses missing, unexpected or misshapen tensors
    own = model.state_dict()
    for key, tensor in raw.items():
        name = key.removeprefix("_orig_mod.").removeprefix("transformer.")
        if name.endswith(".attn.bias"):
            assert name not in own  # the causal mask buffer is dropped...
        else:
            assert own[name].equal(tensor), name
    assert own["h.0.attn.c_attn.bias"].equal(raw["_orig_mod.transformer.h.0.attn.c_attn.bias"])
    assert model.lm_head.weight is model.wte.weight  # ...and the head stays tied


def test_an_untied_head_and_modified_model_args_are_refused() -> None:
    raw = nanogpt_state_dict(ARGS)
    raw["_orig_mod.lm_head.weight"] = raw["_orig_mod.lm_head.weight"].clone() + 1
    with pytest.raises(CheckpointError, match="lm_head that differs from its token embedding"):
        pretrained.nanogpt_state(raw, Path("ckpt.pt"))
    with pytest.raises(CheckpointError, match=r"model_args of ckpt.pt add n_kv_head"):
        pretrained.nanogpt_model_args({**ARGS, "n_kv_head": 1}, Path("ckpt.pt"))
    short = {k: v for k, v in ARGS.items() if k != "bias"}
    with pytest.raises(CheckpointError, match=r"model_args of ckpt.pt lack bias"):
        pretrained.nanogpt_model_args(short, Path("ckpt.pt"))


def test_load_nanogpt_reads_the_directory_and_its_meta_pkl(tmp_path: Path) -> None:
    file = write_nanogpt_checkpoint(tmp_path / "out", ARGS, CHARS)
    for given in (file, file.parent):
        source = pretrained.load_nanogpt(given)
        assert source.path == file and source.iteration == 250
        assert source.model_args == ARGS
        assert source.tokenizer == {"type": "char", "chars": CHARS}
    assert source.build_tokenizer().encode("a b\n") == [2, 1, 3, 0]


def test_meta_pkl_is_found_where_nanogpt_keeps_it(tmp_path: Path) -> None:
    file = write_nanogpt_checkpoint(tmp_path / "out", ARGS, CHARS)
    data = tmp_path / "data" / "shakespeare_char"  # the checkpoint's config names its dataset
    data.mkdir(parents=True)
    (file.parent / "meta.pkl").rename(data / "meta.pkl")
    assert pretrained.load_nanogpt(file).tokenizer["chars"] == CHARS
    (data / "meta.pkl").unlink()
    with pytest.raises(DatasetError, match=r"no meta.pkl beside it .* too few for GPT-2's BPE"):
        pretrained.load_nanogpt(file)
    gpt2 = write_nanogpt_checkpoint(tmp_path / "gpt2", {**ARGS, "vocab_size": 50304})
    assert pretrained.load_nanogpt(gpt2).tokenizer == {"type": "tiktoken", "encoding": "gpt2"}


class Boom:
    """A pickled object whose unpickling would run code."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("unpickling ran code",))


def test_meta_pkl_is_read_without_unpickling_objects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "meta.pkl"
    path.write_bytes(pickle.dumps({"itos": {0: "a"}, "hook": Boom()}))
    with pytest.raises(DatasetError, match=r"holds pickled Python objects .*builtins\.print"):
        pretrained.read_meta_pkl(path)
    assert "unpickling ran code" not in capsys.readouterr().out
    for bad in ({"itos": {0: "a", 2: "b"}}, {"itos": {0: "ab"}}, ["a"], {"stoi": {"a": 0}}):
        path.write_bytes(pickle.dumps(bad))
        with pytest.raises(DatasetError, match=r"is not nanoGPT's char-level meta.pkl"):
            pretrained.read_meta_pkl(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match=r"cannot be read as nanoGPT's meta.pkl"):
        pretrained.read_meta_pkl(path)


def test_files_that_are_not_nanogpt_checkpoints_are_refused(tmp_path: Path) -> None:
    file = tmp_path / "ckpt.pt"
    cases: list[tuple[Any, str]] = [
        ("text", r"is not a nanoGPT checkpoint \(torch.load failed with"),
        (pickle.dumps({"model": {}}), r"is not a nanoGPT checkpoint \(it is not a file written"),
        (torch.zeros(2), r"is not a nanoGPT checkpoint \(it holds a Tensor, not a dict\)"),
        ({"model": {}}, r"is not a nanoGPT checkpoint \(its dict lacks model_args\)"),
        ({"model_args": ARGS, "config": argparse.Namespace(lr=1)}, r"\(argparse.Namespace\)"),
    ]
    for content, message in cases:
        if isinstance(content, str):
            file.write_text(content)
        elif isinstance(content, bytes):
            file.write_bytes(content)
        else:
            torch.save(content, file)
        with pytest.raises(CheckpointError, match=message):
            pretrained.read_nanogpt(file)
    with pytest.raises(CheckpointError, match=r"No nanoGPT checkpoint at .*nowhere: give the path"):
        pretrained.nanogpt_file(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="is neither an lm run directory nor one of its"):
        pretrained.load_source(f"run:{file}")


def test_the_source_gives_the_shape_and_only_dropout_and_a_shorter_context_may_differ(
    tmp_path: Path,
) -> None:
    source = pretrained.load_nanogpt(write_nanogpt_checkpoint(tmp_path, ARGS, CHARS))
    args, state = pretrained.fit_to_run(source, {"dropout": 0.1, "block_size": 4})
    assert args == {**ARGS, "dropout": 0.1, "block_size": 4}
    assert state["wpe.weight"].equal(source.state["wpe.weight"][:4])
    assert pretrained.fit_to_run(source, {"n_layer": 2})[0] == ARGS  # equal values are fine
    with pytest.raises(CheckpointError) as info:
        pretrained.fit_to_run(source, {"n_layer": 3, "block_size": 16, "dropout": 0.2})
    assert str(info.value) == (
        f"init_from gives the model the shape of {source.path}, and the config's "
        "model.n_layer = 3 (the source has 2), model.block_size = 16 (the source has 8) "
        "cannot apply to it: remove these from [model] (only dropout and a smaller "
        "block_size may differ)."
    )


def test_the_data_must_use_the_sources_tokenizer(tmp_path: Path) -> None:
    source = pretrained.load_nanogpt(write_nanogpt_checkpoint(tmp_path, ARGS, CHARS))
    pretrained.check_vocabulary(source, {"tokenizer": source.tokenizer, "vocab_size": 12}, tmp_path)
    other = {"type": "char", "chars": CHARS[::-1]}
    with pytest.raises(DatasetError, match=r"12 characters \(other ones, or in another order\)"):
        pretrained.check_vocabulary(source, {"tokenizer": other, "vocab_size": 12}, tmp_path)
    gpt2 = {"tokenizer": {"type": "tiktoken", "encoding": "gpt2"}, "vocab_size": 50257}
    with pytest.raises(DatasetError, match="reads char-level ids of 12 characters, but the data"):
        pretrained.check_vocabulary(source, gpt2, tmp_path)


def test_init_from_values_are_validated_and_paths_resolved(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text('init_from = "nanogpt:out"\n[model]\ndropout = 0.1\n')
    cfg = load_lm_config(tmp_path / "c.toml", "x")
    assert cfg.init_from == f"nanogpt:{tmp_path / 'out'}"
    assert cfg.model.model_fields_set == {"dropout"}
    # With a source, an experiment's own [model] defaults step aside (arithmetic's block_size).
    cfg = load_lm_config(None, "arithmetic", overrides={"init_from": "run:/r"})
    assert cfg.model.model_fields_set == set()
    assert load_lm_config(None, "x").init_from == "scratch"
    for bad in ("s3:x", "nanogpt:", "gpt2", "run:  "):
        with pytest.raises(ConfigValidationError, match=f"init_from '{bad}' is not known: use"):
            load_lm_config(None, "x", overrides={"init_from": bad})
