"""Fine-tuning a local Hugging Face model through the real ``mlx``: prepare with its
tokenizer, train with LoRA, resume after a SIGKILL bit for bit, sample; and the errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("peft")

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from e2e_helpers import Mlx, kill_hook, run_mlx_killed

from hf_lm_support import finetune_config, hf_model_dir, tiny_text
from mlharness.lm import checkpoints as ckpt


def _write(ws: Path, name: str, config: dict[str, object]) -> str:
    (ws / name).write_text(json.dumps(config), encoding="utf-8")
    return name


def test_lora_fine_tuning_resumes_after_sigkill_and_samples(mlx: Mlx, ws: Path) -> None:
    (ws / "corpus.txt").write_text(tiny_text(), encoding="utf-8")
    hf_model_dir(ws / "models" / "tiny", "llama")
    config = _write(ws, "ft.json", finetune_config("models/tiny", "corpus.txt", lora={"r": 4}))
    out = mlx("prepare", "ft", "--config", config, check=0)
    meta = json.loads((ws / "data" / "ft" / "meta.json").read_text())
    assert meta["tokenizer"]["type"] == "hf" and meta["vocab_size"] == 49, out.stdout
    mlx("train", "ft", "--config", config, check=0)
    (reference,) = (ws / "runs" / "ft").iterdir()

    # Killed right after its fourth checkpoint (steps 0, 5, best 10, last 10), then resumed.
    argv = ["train", "ft", "--config", config, "--fresh"]
    run_mlx_killed(
        argv, workspace=ws, hook=kill_hook("mlharness.lm.checkpoints.save_checkpoint", "n == 4")
    )
    (killed,) = [r for r in (ws / "runs" / "ft").iterdir() if r != reference]
    out = mlx("train", "ft", "--config", config, check=0)
    assert f"Resumed from {killed / 'checkpoints' / 'ckpt_last_00000010'}" in out.stdout
    final = "checkpoints/ckpt_last_00000020"
    a, b = ckpt.load_weights(reference / final), ckpt.load_weights(killed / final)
    assert a.keys() == b.keys() and all("lora_" in k for k in a)
    assert all(a[k].equal(b[k]) for k in a)
    tb = list((killed / "logs" / "tb").iterdir())
    assert tb, "TensorBoard events"

    greedy = ["--top-k", "1", "--num-samples", "1", "--max-new-tokens", "12", "--start", "the "]
    mlx("sample", "ft", "--run-dir", str(killed), *greedy, check=0)
    (found,) = (killed / "samples").glob("*.json")
    (sample,) = json.loads(found.read_text())["samples"]
    assert sample.startswith("the ") and len(sample) == 16


def test_hf_sources_are_refused_in_one_sentence(mlx: Mlx, ws: Path) -> None:
    (ws / "corpus.txt").write_text(tiny_text(), encoding="utf-8")
    hf_model_dir(ws / "models" / "tiny", "gpt2")
    other = hf_model_dir(ws / "models" / "other", "llama", seed=1) / "tokenizer_config.json"
    other.write_text(json.dumps({**json.loads(other.read_text()), "eos_token": "<pad>"}))
    (ws / "models" / "bert").mkdir()
    (ws / "models" / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    hub = finetune_config("Qwen/Qwen2-0.5B", "corpus.txt")
    err = mlx("prepare", "ft", "--config", _write(ws, "hub.json", hub), check=1).stderr
    assert 'prepare.tokenizer = "hf:Qwen/Qwen2-0.5B" names no local directory' in err
    base = finetune_config("models/tiny", "corpus.txt")
    mlx("prepare", "ft", "--config", _write(ws, "ft.json", base), check=0)
    cases = {
        "hf:Qwen/Qwen2-0.5B": 'init_from = "hf:Qwen/Qwen2-0.5B" names no local directory, and '
        "mlx does not download models",
        "hf:models/bert": "Cannot load a Hugging Face causal LM from",
        "hf:models/other": "models/other, but the data in",
    }
    for init_from, message in cases.items():
        config = _write(ws, "bad.json", {**base, "init_from": init_from})
        err = mlx("train", "ft", "--config", config, check=1).stderr
        assert err.startswith("Error: ") and message in " ".join(err.split()), (init_from, err)
        assert "Traceback" not in err
