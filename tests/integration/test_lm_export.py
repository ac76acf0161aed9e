"""``mlx export`` in-process: Hugging Face directories that plain transformers loads and that
compute our logits and our token ids, for each tokenizer kind; GGUF files read back with
llama.cpp's own reader; which checkpoint is taken, and the errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")
tiktoken = pytest.importorskip("tiktoken")

sys.path.insert(0, str(Path(__file__).parents[1]))

from export_support import load_cleanly, local_encoding  # noqa: E402
from mlharness.errors import CheckpointError, ConfigError, ModelError, RunDirectoryError  # noqa: E402
from mlharness.lm.export import export, locate  # noqa: E402
from mlharness.lm.export_gguf import GGUF_FILE, gguf_name  # noqa: E402
from mlharness.lm.export_tokenizer import byte_level, vocabulary  # noqa: E402
from mlharness.lm.export_weights import full_state  # noqa: E402
from mlharness.lm.sampler import load_model  # noqa: E402
from mlharness.lm.tokenizers import load_tokenizer  # noqa: E402
from mlharness.lm.trainer import train  # noqa: E402
from mlharness.runs import checkpoints as run_ckpt  # noqa: E402

SHORT = {"train": {"max_iters": 10}, "model": {"block_size": 48}}
TEXTS = ["First Citizen:\nBefore we proceed", "the theatre, the end.\n\n  x  ", "Speak"]


def quiet(_: str) -> None:
    """Export's console lines, unwanted in these tests."""


def trained(tiny_lm: Any, overrides: dict[str, Any] | None = None) -> tuple[Any, Path]:
    from mlharness.config import deep_merge

    cfg = tiny_lm(deep_merge(SHORT, overrides or {}))
    return cfg, train(cfg, progress=False).run_dir


def our_logits(checkpoint: Path, ids: Any) -> Any:
    model, _ = load_model(checkpoint, torch.device("cpu"))
    with torch.no_grad():
        return model(ids, all_logits=True)[0]


# ----------------------------------------------------------------------------- hf


def test_char_run_loads_in_plain_transformers_with_our_logits_and_ids(tiny_lm: Any) -> None:
    _, run = trained(tiny_lm)
    result = export(run, "hf", say=quiet)
    assert result.out == run / "export" / f"hf-float32-{result.checkpoint.name}"
    assert result.checkpoint == run_ckpt.pick_for_sampling(run / "checkpoints").path
    assert sorted(p.name for p in result.out.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    config = json.loads((result.out / "config.json").read_text())
    assert config["activation_function"] == "gelu" and config["model_type"] == "gpt2"
    assert config["eos_token_id"] is None  # a char vocabulary has no end-of-text token
    ids = torch.randint(
        0, config["vocab_size"], (2, 48), generator=torch.Generator().manual_seed(0)
    )
    tok = load_tokenizer(run)
    encoded = [tok.encode(t) for t in TEXTS]
    answer = load_cleanly(result.out, ids=ids.tolist(), texts=TEXTS, decode=encoded)
    theirs = torch.tensor(answer["logits"])
    assert (theirs - our_logits(result.checkpoint, ids)).abs().max().item() < 1e-5
    assert answer["encoded"] == encoded
    assert answer["decoded"] == TEXTS


def test_bpe_run_keeps_its_tokenizer_and_logits(tiny_lm: Any) -> None:
    _, run = trained(tiny_lm, {"prepare": {"tokenizer": "bpe", "bpe_vocab_size": 300}})
    result = export(run, "hf", checkpoint="last", say=quiet)
    assert result.checkpoint.name.startswith("ckpt_last_")
    ids = torch.randint(0, 300, (1, 48), generator=torch.Generator().manual_seed(1))
    tok = load_tokenizer(run)
    texts = [*TEXTS, "naïve café — 日本"]  # byte-level: any text encodes
    answer = load_cleanly(result.out, ids=ids.tolist(), texts=texts)
    assert answer["encoded"] == [tok.encode(t) for t in texts]
    theirs = torch.tensor(answer["logits"])
    assert (theirs - our_logits(result.checkpoint, ids)).abs().max().item() < 1e-5


def test_tiktoken_run_exports_gpt2_style_bpe(tiny_lm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    encoding = local_encoding()
    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "test_export", encoding)
    _, run = trained(tiny_lm, {"prepare": {"tokenizer": "tiktoken:test_export"}})
    result = export(run, "hf", dtype="float16", say=quiet)
    config = json.loads((result.out / "config.json").read_text())
    eos = encoding.eot_token
    assert config["eos_token_id"] == eos and config["dtype"] == "float16"
    texts = [*TEXTS, "the theatre ended. éa"]
    answer = load_cleanly(result.out, texts=texts, decode=[[*encoding.encode(texts[1]), eos]])
    assert answer["encoded"] == [encoding.encode_ordinary(t) for t in texts]
    assert answer["decoded"] == [texts[1] + "<|endoftext|>"]


def test_export_refuses_an_existing_out_without_force_and_replaces_it_with(
    tiny_lm: Any, tmp_path: Path
) -> None:
    _, run = trained(tiny_lm)
    out = tmp_path / "exported"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RunDirectoryError) as info:
        export(run, "hf", out=out, say=quiet)
    assert str(info.value) == (
        f"{out} already exists: pass --force to replace it, or choose another --out."
    )
    export(run, "hf", out=out, force=True, say=quiet)
    assert not (out / "old.txt").exists() and (out / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_which_checkpoint_and_the_errors(tiny_lm: Any, tmp_path: Path) -> None:
    _, run = trained(tiny_lm)
    checkpoints = run / "checkpoints"
    best = run_ckpt.list_checkpoints(checkpoints, "best")[-1].path
    last = run_ckpt.list_checkpoints(checkpoints, "last")[-1].path
    assert locate(run) == (run, best)
    assert locate(run, "last") == (run, last)
    assert locate(run, last.name) == (run, last)
    assert locate(last) == (run, last)
    assert locate(run.parent) == (run, best)  # an experiment's runs: the newest trained one
    with pytest.raises(ConfigError, match="is a checkpoint already"):
        locate(last, "best")
    with pytest.raises(CheckpointError, match=r"No checkpoint 'nope' in .*: use best, last"):
        locate(run, "nope")
    with pytest.raises(CheckpointError, match="There is no run or checkpoint at"):
        locate(tmp_path / "missing")
    # A run that holds only its initial checkpoint has not trained.
    fresh = run.parent / "29990101_000000"
    (fresh / "checkpoints").mkdir(parents=True)
    (checkpoints / last.name).rename(fresh / "checkpoints" / "ckpt_last_00000000")
    with pytest.raises(CheckpointError) as info:
        locate(fresh)
    assert "has not trained yet" in str(info.value)
    assert "--checkpoint ckpt_last_00000000" in str(info.value)
    assert locate(fresh, "ckpt_last_00000000")[1].name == "ckpt_last_00000000"
    with pytest.raises(CheckpointError, match="No trained checkpoint under"):
        locate(tmp_path)


@pytest.mark.parametrize(
    ("fmt", "dtype", "message"),
    [
        ("onnx", "float32", "Unknown export format 'onnx': use --format hf or --format gguf."),
        ("hf", "int4", "Unknown --dtype 'int4' for --format hf: use one of float32, float16"),
        ("hf", "q8_0", "--dtype q8_0 is a GGUF quantization: use it with --format gguf"),
    ],
)
def test_unknown_format_or_dtype(tmp_path: Path, fmt: str, dtype: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        export(tmp_path, fmt, dtype=dtype, say=quiet)
    assert str(info.value).startswith(message)


# ----------------------------------------------------------------------------- gguf


def _fields(reader: Any) -> dict[str, Any]:
    return {name: field.contents() for name, field in reader.fields.items()}


@pytest.mark.parametrize("dtype", ["float32", "float16", "q8_0"])
def test_gguf_reads_back_with_the_right_names_shapes_values_and_vocabulary(
    tiny_lm: Any, dtype: str
) -> None:
    _, run = trained(tiny_lm)
    result = export(run, "gguf", dtype=dtype, say=quiet)
    reader = gguf.GGUFReader(result.out / GGUF_FILE)
    meta = _fields(reader)
    args = run_ckpt.read_checkpoint_json(result.checkpoint)["model_args"]
    assert meta["general.architecture"] == "gpt2"
    assert meta["gpt2.context_length"] == args["block_size"] == 48
    assert meta["gpt2.embedding_length"] == args["n_embd"]
    assert meta["gpt2.feed_forward_length"] == 4 * args["n_embd"]
    assert meta["gpt2.block_count"] == args["n_layer"]
    assert meta["gpt2.attention.head_count"] == args["n_head"]
    assert meta["gpt2.attention.layer_norm_epsilon"] == pytest.approx(1e-5)
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    tok = load_tokenizer(run)
    assert meta["tokenizer.ggml.tokens"] == [byte_level(c.encode()) for c in tok.chars]
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert "tokenizer.ggml.eos_token_id" not in meta

    from mlharness.lm import checkpoints as lm_ckpt

    state = full_state(lm_ckpt.load_weights(result.checkpoint), args)
    tensors = {t.name: t for t in reader.tensors}
    assert sorted(tensors) == sorted(gguf_name(k) for k in state)
    assert "output.weight" not in tensors  # llama.cpp ties it to token_embd
    for key, ours in state.items():
        t = tensors[gguf_name(key)]
        assert tuple(int(n) for n in reversed(t.shape)) == tuple(ours.shape), key
        theirs = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ours.shape)
        tolerance = {"float32": 0, "float16": 1e-3, "q8_0": 2e-2}[dtype]
        if ours.dim() == 1 or key == "wpe.weight":
            assert t.tensor_type == gguf.GGMLQuantizationType.F32, key  # kept exact
            tolerance = 0
        np.testing.assert_allclose(theirs, ours.numpy(), rtol=0, atol=tolerance, err_msg=key)
    assert (result.out / "Modelfile").read_text().startswith(f"FROM ./{GGUF_FILE}\n")


def test_gguf_of_gpt2_bpe_carries_merges_and_end_of_text(
    tiny_lm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoding = local_encoding()
    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "test_export", encoding)
    _, run = trained(tiny_lm, {"prepare": {"tokenizer": "tiktoken:test_export"}})
    result = export(run, "gguf", say=quiet)
    meta = _fields(gguf.GGUFReader(result.out / GGUF_FILE))
    tokens = meta["tokenizer.ggml.tokens"]
    assert len(tokens) == encoding.n_vocab
    assert tokens[encoding.encode_single_token(b" the")] == "Ġthe"
    merges = meta["tokenizer.ggml.merges"]
    assert merges[:3] == ["t h", "h e", "th e"] and "Ġ the" in merges and "Ġ en" in merges
    eos = encoding.eot_token
    assert tokens[eos] == "<|endoftext|>"
    assert meta["tokenizer.ggml.token_type"][eos] == gguf.TokenType.CONTROL
    assert meta["tokenizer.ggml.eos_token_id"] == meta["tokenizer.ggml.bos_token_id"] == eos
    assert 'PARAMETER stop "<|endoftext|>"' in (result.out / "Modelfile").read_text()


def test_gguf_refuses_a_tiktoken_pattern_llama_cpp_lacks(
    tiny_lm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = local_encoding()
    other = tiktoken.Encoding(
        name="test_other",
        pat_str=r"\S+|\s+",
        mergeable_ranks=base._mergeable_ranks,
        special_tokens={},
    )
    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "test_other", other)
    _, run = trained(tiny_lm, {"prepare": {"tokenizer": "tiktoken:test_other"}})
    with pytest.raises(ModelError, match="export it with --format hf instead"):
        export(run, "gguf", say=quiet)
    assert not (run / "export").exists() or not any((run / "export").iterdir())


def test_vocabulary_of_a_char_vocabulary_merges_multibyte_characters() -> None:
    from mlharness.lm.tokenizers import CharTokenizer

    vocab = vocabulary(CharTokenizer("\n aé日"))
    assert vocab.tokens == ["Ċ", "Ġ", "a", "Ã©", "æĹ¥"]
    assert vocab.merges == [("Ã", "©"), ("æ", "Ĺ"), ("æĹ", "¥")]
    assert vocab.eos_id is None


def test_gguf_pads_the_vocabulary_to_the_embedding_rows(tmp_path: Path) -> None:
    """A vocab_size rounded up past the tokenizer (nanoGPT's 50304) gets placeholder tokens."""
    from mlharness.lm.export_gguf import write_gguf
    from mlharness.lm.model import GPT, GPTConfig
    from mlharness.lm.tokenizers import CharTokenizer

    tok = CharTokenizer("\n abc")
    config = GPTConfig(block_size=8, vocab_size=8, n_layer=1, n_head=2, n_embd=32, bias=True)
    state = full_state(GPT(config).state_dict(), config.to_dict())
    write_gguf(tmp_path, state, config.to_dict(), tok, "float32", "padded")
    meta = _fields(gguf.GGUFReader(tmp_path / GGUF_FILE))
    assert meta["tokenizer.ggml.tokens"] == ["Ċ", "Ġ", "a", "b", "c", "[PAD5]", "[PAD6]", "[PAD7]"]
    assert meta["tokenizer.ggml.token_type"][5:] == [gguf.TokenType.USER_DEFINED] * 3
    assert meta["tokenizer.ggml.merges"] == ["ÿ ÿ"]  # llama.cpp needs one; 0xFF is never UTF-8
    with pytest.raises(ModelError, match="the model only 8 embeddings"):
        write_gguf(tmp_path, state, config.to_dict(), CharTokenizer("0123456789"), "float32", "x")


def test_more_errors_each_one_sentence(tiny_lm: Any, tmp_path: Path) -> None:
    _, run = trained(tiny_lm)
    checkpoints = run / "checkpoints"
    file_out = tmp_path / "taken"
    file_out.write_text("x")
    with pytest.raises(RunDirectoryError, match=r"--out .*taken is a file: name a directory"):
        export(run, "hf", out=file_out, say=quiet)
    # A best checkpoint that is still the baseline (GRPO's can be) points to the last one.
    best = run_ckpt.list_checkpoints(checkpoints, "best")
    for info in best:
        info.path.rename(checkpoints / "ckpt_best_00000000_val_loss_9.0000")
        break
    for info in best[1:]:
        run_ckpt.remove_directory(info.path)
    with pytest.raises(CheckpointError, match=r"is its initial one .*pass --checkpoint last"):
        locate(run)
    run_ckpt.remove_directory(checkpoints / "ckpt_best_00000000_val_loss_9.0000")
    with pytest.raises(CheckpointError, match=r"No ckpt_best_\* checkpoint in .*--checkpoint last"):
        locate(run, "best")
    # The run's meta.json (its tokenizer) is gone.
    (run / "meta.json").rename(run / "meta.json.bak")
    with pytest.raises(CheckpointError, match=r"has no meta\.json, so its tokenizer is unknown"):
        export(run, "hf", say=quiet)
    (run / "meta.json.bak").rename(run / "meta.json")
    # Weights of another layout.
    with pytest.raises(CheckpointError, match="not a GPT of this project's layout"):
        full_state({"wte.weight": torch.zeros(2, 2)}, {"n_layer": 1, "n_embd": 2})
