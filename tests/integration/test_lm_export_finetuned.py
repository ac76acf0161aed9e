"""``mlx export`` of lm runs that fine-tuned a Hugging Face model (fully or with LoRA) and of
LoRA runs of our own GPT: each export loaded by a Python that cannot import this project
computes the logits of the model we trained; adapters merge with PEFT or leave as PEFT's
adapter directory; GGUF for GPT-2's layout, a pointer to llama.cpp's converter for others."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")
pytest.importorskip("peft")

sys.path.insert(0, str(Path(__file__).parents[1]))

from export_support import gpt2_bpe_model_dir, load_all_cleanly, load_cleanly  # noqa: E402
from hf_lm_support import finetune_config, hf_model_dir, tiny_text  # noqa: E402
from lm_support import TINY_LM, corpus_text  # noqa: E402
from mlharness.config import deep_merge  # noqa: E402
from mlharness.errors import CheckpointError, ConfigError, ModelError  # noqa: E402
from mlharness.lm.config import load_lm_config  # noqa: E402
from mlharness.lm.export import export  # noqa: E402
from mlharness.lm.export_gguf import GGUF_FILE  # noqa: E402
from mlharness.lm.export_weights import merged_state  # noqa: E402
from mlharness.lm.prepare import prepare_data  # noqa: E402
from mlharness.lm.sampler import load_model  # noqa: E402
from mlharness.lm.tokenizers import load_tokenizer  # noqa: E402
from mlharness.lm.trainer import train  # noqa: E402

IDS = [[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8], [2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5]]
TEXTS = ["the king speaks to a fair lord.", "and night 42"]
LORA = {"lora": {"r": 4, "alpha": 32}, "train": {"learning_rate": 3e-2, "min_lr": 3e-3}}


def quiet(_: str) -> None:
    """Export's console lines, unwanted in these tests."""


def finetuned(workspace: Path, model_dir: Path, text: str, **extra: Any) -> Path:
    """The run directory of a short fine-tuning of ``model_dir`` on ``text``."""
    corpus = workspace / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    extra = deep_merge({"train": {"max_iters": 10}}, extra)
    cfg = load_lm_config(None, "ft", overrides=finetune_config(model_dir, corpus, **extra))
    prepare_data(cfg, None, force=True, progress=False)
    return train(cfg, progress=False, fresh=True).run_dir


def our_logits(checkpoint: Path, ids: list[list[int]]) -> Any:
    """What mlx computes: the run's model as sampling loads it (LoRA layers in place)."""
    model, _ = load_model(checkpoint, torch.device("cpu"))
    with torch.no_grad():
        return model(torch.tensor(ids), all_logits=True)[0]


def max_diff(answer: dict[str, Any], ours: Any) -> float:
    return float((torch.tensor(answer["logits"]) - ours).abs().max().item())


def test_full_fine_tune_keeps_its_layout_and_tokenizer(workspace: Path) -> None:
    from safetensors.torch import load_file

    model_dir = hf_model_dir(workspace / "llama", "llama")
    run = finetuned(workspace, model_dir, tiny_text())
    result = export(run, "hf", say=quiet)
    config = json.loads((result.out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert (result.out / "tokenizer.json").is_file() and (
        result.out / "model.safetensors"
    ).is_file()
    exported, source = (load_file(str(d / "model.safetensors")) for d in (result.out, model_dir))
    assert any(not exported[k].equal(source[k]) for k in source)  # the trained weights
    tokenizer = load_tokenizer(run)
    answer = load_cleanly(result.out, ids=IDS, texts=TEXTS)
    assert max_diff(answer, our_logits(result.checkpoint, IDS)) < 1e-5
    assert answer["encoded"] == [tokenizer.encode(t) for t in TEXTS]

    half = export(run, "hf", dtype="bfloat16", say=quiet)
    assert {t.dtype for t in load_file(str(half.out / "model.safetensors")).values()} == {
        torch.bfloat16
    }
    with pytest.raises(
        ConfigError, match=r"trained a Hugging Face llama model.*convert_hf_to_gguf"
    ):
        export(run, "gguf", say=quiet)
    with pytest.raises(ConfigError, match=r"needs a run trained with LoRA \(\[lora\]\)"):
        export(run, "hf", adapter_only=True, say=quiet)


def test_lora_on_gpt2_merges_with_peft_and_exports_its_adapter(workspace: Path) -> None:
    from transformers import AutoModelForCausalLM

    model_dir = hf_model_dir(workspace / "gpt2", "gpt2")
    run = finetuned(workspace, model_dir, tiny_text(), **LORA)
    merged = export(run, "hf", say=quiet)
    ours = our_logits(merged.checkpoint, IDS)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        assert (base(torch.tensor(IDS)).logits - ours).abs().max() > 1e-3  # adapters count
    assert not (merged.out / "adapter_config.json").exists()

    adapter = export(run, "hf", adapter_only=True, say=quiet)
    assert adapter.out == run / "export" / f"adapter-float32-{adapter.checkpoint.name}"
    assert not (adapter.out / "model.safetensors").exists()
    config = json.loads((adapter.out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(model_dir.resolve())
    answers = load_all_cleanly(
        [(merged.out, {"ids": IDS}), (adapter.out, {"ids": IDS, "base": str(model_dir)})]
    )
    assert max(max_diff(answer, ours) for answer in answers) < 1e-5

    # GPT-2's layout would go to GGUF, but this tokenizer is a character WordLevel model.
    with pytest.raises(ModelError, match="is not a byte-level BPE split as GPT-2's"):
        export(run, "gguf", out=workspace / "x.gguf", say=quiet)
    assert not (workspace / "x.gguf").exists()
    model_dir.rename(workspace / "moved")
    with pytest.raises(CheckpointError, match=r"its base model .*gpt2 \(init_from\) is gone"):
        export(run, "hf", force=True, say=quiet)


def test_lora_run_of_our_gpt_exports_merged_as_gpt2(tiny_lm: Any) -> None:
    source = train(tiny_lm({"train": {"max_iters": 10}}), progress=False).run_dir
    overrides = {"init_from": f"run:{source}", "model": TINY_LM["model"], **LORA}
    run = train(tiny_lm(deep_merge(overrides, {"train": {"max_iters": 10}})), progress=False)
    result = export(run.run_dir, "hf", say=quiet)
    ours = our_logits(result.checkpoint, IDS)
    assert (
        ours - our_logits(source / "checkpoints" / "ckpt_last_00000010", IDS)
    ).abs().max() > 1e-3
    assert max_diff(load_cleanly(result.out, ids=IDS), ours) < 1e-5

    gguf_out = export(run.run_dir, "gguf", say=quiet).out
    model, _ = load_model(result.checkpoint, torch.device("cpu"))
    qkv = merged_state(model)["h.0.attn.c_attn.weight"]
    tensors = {t.name: t for t in gguf.GGUFReader(gguf_out / GGUF_FILE).tensors}
    stored = np.asarray(tensors["blk.0.attn_qkv.weight"].data).reshape(qkv.shape)
    np.testing.assert_array_equal(stored, qkv.numpy())
    with pytest.raises(ConfigError, match="needs a Hugging Face base model"):
        export(run.run_dir, "hf", adapter_only=True, say=quiet)


def test_gpt2_with_gpt2s_tokenizer_exports_gguf(workspace: Path) -> None:
    from safetensors.torch import load_file

    model_dir = gpt2_bpe_model_dir(workspace / "gpt2bpe", corpus_text())
    run = finetuned(workspace, model_dir, corpus_text(), **LORA)
    result = export(run, "gguf", say=quiet)
    merged = export(run, "hf", say=quiet)
    reader = gguf.GGUFReader(result.out / GGUF_FILE)
    meta = {name: field.contents() for name, field in reader.fields.items()}
    assert meta["gpt2.context_length"] == 64 and meta["tokenizer.ggml.pre"] == "gpt-2"
    vocab = json.loads((model_dir / "tokenizer.json").read_text())
    tokens = meta["tokenizer.ggml.tokens"]
    assert tokens[:300] == sorted(vocab["model"]["vocab"], key=vocab["model"]["vocab"].get)
    assert tokens[300] == "<|endoftext|>" == tokens[meta["tokenizer.ggml.eos_token_id"]]
    assert len(meta["tokenizer.ggml.merges"]) == len(vocab["model"]["merges"])
    weights = load_file(str(merged.out / "model.safetensors"))  # the merged model's
    tensors = {t.name: t for t in reader.tensors}
    for ours, theirs, linear in [
        ("blk.1.attn_qkv.weight", "transformer.h.1.attn.c_attn.weight", True),
        ("blk.0.ffn_down.weight", "transformer.h.0.mlp.c_proj.weight", True),
        ("token_embd.weight", "transformer.wte.weight", False),
        ("output_norm.bias", "transformer.ln_f.bias", False),
    ]:
        expected = weights[theirs].t() if linear else weights[theirs]
        stored = np.asarray(tensors[ours].data).reshape(expected.shape)
        np.testing.assert_array_equal(stored, expected.numpy(), err_msg=ours)


def test_our_gpt_on_a_hugging_face_tokenizer_exports_it(tiny_lm: Any, workspace: Path) -> None:
    model_dir = gpt2_bpe_model_dir(workspace / "gpt2bpe", corpus_text())
    run = train(
        tiny_lm({"prepare": {"tokenizer": f"hf:{model_dir}"}, "train": {"max_iters": 10}}),
        progress=False,
    ).run_dir
    result = export(run, "hf", say=quiet)
    config = json.loads((result.out / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["eos_token_id"] == 300
    answer = load_cleanly(result.out, ids=IDS, texts=TEXTS)
    assert max_diff(answer, our_logits(result.checkpoint, IDS)) < 1e-5
    tokenizer = load_tokenizer(run)
    assert answer["encoded"] == [tokenizer.encode(t) for t in TEXTS]
    meta = {
        k: f.contents()
        for k, f in gguf.GGUFReader(export(run, "gguf", say=quiet).out / GGUF_FILE).fields.items()
    }
    assert meta["tokenizer.ggml.eos_token_id"] == 300
