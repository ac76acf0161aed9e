"""``mlx export`` through the real command: a trained run to a Hugging Face directory whose
greedy ``generate()`` writes what ``mlx sample`` greedy wrote, and to GGUF; and its errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from e2e_helpers import Mlx, single_run_dir, write_config  # noqa: E402

from export_support import load_cleanly  # noqa: E402
from hf_lm_support import finetune_config, hf_model_dir, tiny_text  # noqa: E402
from lm_support import TINY_LM, corpus_text  # noqa: E402
from mlharness.config import deep_merge  # noqa: E402
from mlharness.lm.tokenizers import load_tokenizer  # noqa: E402

PROMPT = "First Citizen:\n"
GREEDY = {"num_samples": 1, "max_new_tokens": 64, "top_k": 1, "start": PROMPT}


def test_export_a_run_for_transformers_and_llama_cpp(mlx: Mlx, ws: Path) -> None:
    (ws / "corpus.txt").write_text(corpus_text(), encoding="utf-8")
    config = deep_merge(
        TINY_LM,
        {
            "kind": "lm",
            "prepare": {"preparer": "text", "input": "corpus.txt"},
            "model": {"block_size": 96},  # the prompt and 64 new tokens fit: no context shift
            "sample": GREEDY,  # mlx loop samples greedily at the end (top-k 1)
        },
    )
    write_config(ws / "tiny.json", config)
    mlx("loop", "tiny", "--config", "tiny.json", check=0)
    run = single_run_dir(ws, "tiny")
    (samples,) = (run / "samples").glob("*.json")
    ours = json.loads(samples.read_text(encoding="utf-8"))["samples"][0]

    out = mlx("export", run, "--format", "hf", check=0).stdout
    assert out.startswith(f"Exporting {run}/checkpoints/ckpt_best_")
    exported = Path(out.strip().splitlines()[-1].removeprefix("Exported: "))
    assert exported.parent == run / "export" and exported.name.startswith("hf-float32-ckpt_best_")
    prompt = load_tokenizer(run).encode(PROMPT)
    answer = load_cleanly(exported, prompt=prompt, new=64)
    assert len(answer["generated"]) == len(prompt) + 64
    assert answer["generated_text"] == ours

    again = mlx("export", run, "--format", "hf", check=1).stderr
    assert again == (
        f"Error: {exported} already exists: pass --force to replace it, or choose another --out.\n"
    )
    mlx("export", run, "--format", "hf", "--force", check=0)
    err = mlx("export", run, "--format", "hf", "--adapter-only", check=1).stderr
    assert err == (
        "Error: --adapter-only needs a run trained with LoRA ([lora]), and this one trained "
        "every weight: export it without --adapter-only.\n"
    )

    out = mlx("export", run, "--format", "gguf", "--dtype", "q8_0", "--out", "tiny-gguf", check=0)
    assert out.stdout.strip().endswith("Exported: tiny-gguf")
    reader = gguf.GGUFReader(ws / "tiny-gguf" / "model.gguf")
    names = {t.name: t.tensor_type.name for t in reader.tensors}
    assert names["token_embd.weight"] == "Q8_0" and names["blk.1.ffn_down.weight"] == "Q8_0"
    assert names["blk.0.attn_norm.bias"] == "F32" and names["position_embd.weight"] == "F32"
    assert (ws / "tiny-gguf" / "Modelfile").is_file()


def test_export_errors_are_one_sentence(mlx: Mlx, ws: Path) -> None:
    untrained = ws / "runs" / "tiny" / "20260101_000000"
    (untrained / "checkpoints").mkdir(parents=True)
    err = mlx("export", untrained, "--format", "hf", check=1).stderr
    assert err == (
        f"Error: No checkpoint in {untrained / 'checkpoints'}: neither ckpt_best_* nor "
        "ckpt_last_* exists. Train first with 'mlx train', or pass --checkpoint PATH.\n"
    )
    err = mlx("export", ws / "runs", "--format", "hf", check=1).stderr
    assert err.startswith(f"Error: No trained checkpoint under {ws / 'runs'}: pass a run")
    err = mlx("export", untrained, "--format", "onnx", check=1).stderr
    assert err == "Error: Unknown export format 'onnx': use --format hf or --format gguf.\n"
    err = mlx("export", untrained, "--format", "gguf", "--dtype", "int4", check=1).stderr
    assert err == (
        "Error: Unknown --dtype 'int4' for --format gguf: use one of float32, float16, "
        "bfloat16, q8_0.\n"
    )
    err = mlx("export", untrained, check=1).stderr
    assert "Missing option '--format'" in err


def test_export_a_lora_fine_tune_of_a_hugging_face_model(mlx: Mlx, ws: Path) -> None:
    pytest.importorskip("peft")
    (ws / "corpus.txt").write_text(tiny_text(), encoding="utf-8")
    base = hf_model_dir(ws / "models" / "tiny", "llama").resolve()
    config = finetune_config("models/tiny", "corpus.txt", lora={"r": 4})
    write_config(ws / "ft.json", deep_merge(config, {"train": {"max_iters": 10}}))
    mlx("prepare", "ft", "--config", "ft.json", check=0)
    mlx("train", "ft", "--config", "ft.json", check=0)
    run = single_run_dir(ws, "ft")

    out = mlx("export", run, "--format", "hf", "--adapter-only", check=0).stdout
    assert "(iteration 10, LoRA adapters) as adapter float32" in out
    exported = Path(out.strip().splitlines()[-1].removeprefix("Exported: "))
    assert json.loads((exported / "adapter_config.json").read_text())[
        "base_model_name_or_path"
    ] == str(base)
    err = mlx("export", run, "--format", "gguf", check=1).stderr
    assert err == (
        "Error: This run trained a Hugging Face llama model, which the GGUF writer here does "
        "not spell (it writes GPT-2's layout): export it with --format hf, then run "
        "llama.cpp's convert_hf_to_gguf.py on that directory.\n"
    )
    err = mlx("export", run, "--format", "gguf", "--adapter-only", check=1).stderr
    assert err == (
        "Error: --adapter-only writes a PEFT adapter directory, a Hugging Face format: use it "
        "with --format hf.\n"
    )
    base.rename(base.with_name("moved"))
    err = mlx("export", run, "--format", "hf", check=1).stderr
    assert err == (
        f"Error: This LoRA run's checkpoints hold only its adapters, and its base model {base} "
        "(init_from) is gone: put the base model back there to export the run.\n"
    )
