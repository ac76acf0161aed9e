"""The GPU check: what a CPU machine cannot tell us, measured on one CUDA GPU in minutes.

Run it through ``bench/gpu_check.sh`` (or ``make gpu-check``) on a machine with a GPU::

    bench/gpu_check.sh                        # everything, ~4-8 minutes
    .venv/bin/python bench/gpu_check.py --only lm --iters 50

Sections (``--only``, comma-separated):

``lm``
    ``mlx train`` on a GPT-2-small shape (12 layers, 12 heads, 768 wide, block 1,024, no
    biases or dropout, as nanoGPT's GPT-2 recipe) in bfloat16 autocast, batch 16 x 4
    micro-batches (65,536 tokens a step), once eager and once with ``train.compile``: the
    median tokens/s after ``--warmup`` steps, and the model FLOPs utilisation (MFU) against
    the GPU's dense bfloat16 peak. The data is tiny-shakespeare (``--text``, else
    ``../shared/data/tinyshakespeare.txt``, else this repository's docs as text) in GPT-2's
    BPE (tiktoken, from ``TIKTOKEN_CACHE_DIR`` offline), or in characters where tiktoken's
    GPT-2 files cannot be had: the output says which.
``grpo``
    ``bench/grpo_large.py --only train --skip-trl --device cuda``: GRPO steps at the same
    GPT-2-small shape with GPT-2's 50,257 ids, 1 prompt x 8 completions of <= 128 tokens,
    full fine-tuning and LoRA r 16 (float32: GRPO has no autocast yet).
``tests``
    ``pytest -m cuda``: the tests that need a GPU (tests/integration/test_cuda.py).

MFU counts 6 N + 12 L H Q T FLOPs a token (N parameters without the position embeddings,
L layers, H heads of Q channels, context T), as nanoGPT's ``estimate_mfu`` and the PaLM
paper do. The peak comes from the device name (H100/H200 989, A100 312, L4 121 TFLOP/s
dense bfloat16), else from ``GPU_PEAK_TFLOPS``; without either, MFU is left out.
Every figure goes to ``--json`` (default ``$OUT/gpu_check.json``, else
``gpu_check_out/gpu_check.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from report import child_env, finish, heading, run_child, say, section_parser

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SECTIONS = ("lm", "grpo", "tests")
SHAPE = {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024}
BATCH, ACCUM = 16, 4
# Dense bfloat16 tensor-core peaks (TFLOP/s) from NVIDIA's data sheets, by name in the
# device's name; L4 as a word, so that an L40S is not taken for one.
PEAKS = [(r"\bH100\b|\bH200\b", 989.0), (r"\bA100\b", 312.0), (r"\bL4\b", 121.0)]
PEAK_ENV = "GPU_PEAK_TFLOPS"


def bf16_peak_tflops(device_name: str, env: Mapping[str, str]) -> float | None:
    """The GPU's dense bfloat16 peak: ``GPU_PEAK_TFLOPS`` if set, else by its name."""
    if env.get(PEAK_ENV):
        return float(env[PEAK_ENV])
    for pattern, peak in PEAKS:
        if re.search(pattern, device_name):
            return peak
    return None


def flops_per_token(
    n_params: int, n_layer: int, n_head: int, n_embd: int, block_size: int
) -> float:
    """Forward and backward FLOPs a trained token costs (nanoGPT's estimate_mfu)."""
    return 6.0 * n_params + 12.0 * n_layer * n_head * (n_embd // n_head) * block_size


def mfu(tokens_per_sec: float, per_token: float, peak_tflops: float | None) -> float | None:
    """Achieved FLOP/s over the peak; None without a peak."""
    return None if not peak_tflops else tokens_per_sec * per_token / (peak_tflops * 1e12)


def gpt_params(vocab: int) -> int:
    """Our GPT's parameters at SHAPE, position embeddings left out (counted on no memory)."""
    import torch

    from mlharness.lm.model import GPT, GPTConfig

    with torch.device("meta"):
        model = GPT(GPTConfig(vocab_size=vocab, bias=False, dropout=0.0, **SHAPE))
    return model.num_params(non_embedding=True)


# --------------------------------------------------------------------------- lm


def find_text(given: str | None) -> tuple[Path, str]:
    """The corpus and what it is: ``--text``, the shared tiny-shakespeare, else our docs."""
    if given:
        return Path(given).resolve(), f"--text {given}"
    shared = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
    if shared.is_file():
        return shared, "tiny-shakespeare"
    docs = Path(tempfile.mkdtemp(prefix="gpu-check-text-")) / "docs.txt"
    parts = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    docs.write_text("\n".join(p.read_text(encoding="utf-8") for p in parts), encoding="utf-8")
    return docs, "this repository's README and docs (no tiny-shakespeare found)"


def lm_config(work: Path, tokenizer: str, iters: int, compiled: bool) -> Path:
    config = {
        "kind": "lm",
        "name": "gpu_check",
        "prepare": {"preparer": "text", "input": "corpus.txt", "tokenizer": tokenizer},
        "model": {**SHAPE, "bias": False, "dropout": 0.0},
        "train": {
            "max_iters": iters,
            "batch_size": BATCH,
            "grad_accum_steps": ACCUM,
            "learning_rate": 6e-4,
            "min_lr": 6e-5,
            "warmup_iters": min(10, iters - 1),
            "eval_interval": iters,
            "eval_iters": 2,
            "log_interval": 1,  # every step's loss is read, so each step's time is synced
            "device": "cuda",
            "dtype": "bfloat16",
            "compile": compiled,
            "checkpointing": {"interval": iters, "keep": {"last": 1, "best": 0}},
        },
    }
    path = work / f"gpu_check_{tokenizer.replace(':', '_')}.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def mlx(work: Path, *args: str) -> Any:
    cmd = [PYTHON, "-m", "mlharness", *args]
    return run_child(cmd, cwd=work, env=child_env(MLX_WORKSPACE=str(work)), echo=lambda _: True)


def prepare(work: Path, text: Path) -> tuple[str, str]:
    """Prepare the corpus in GPT-2's BPE, else in characters; (tokenizer, note)."""
    (work / "corpus.txt").write_bytes(text.read_bytes())
    for tokenizer in ("tiktoken:gpt2", "char"):
        config = lm_config(work, tokenizer, 2, False)
        run = mlx(work, "prepare", "gpu_check", "--config", str(config))
        if run.ok:
            note = "" if tokenizer != "char" else " (tiktoken's GPT-2 files were not available)"
            return tokenizer, f"{tokenizer}{note}"
        say(f"prepare with {tokenizer} failed (above)")
    raise SystemExit("Error: mlx prepare failed for both tokenizers: see the output above.")


def lm_run(work: Path, tokenizer: str, iters: int, warmup: int, compiled: bool) -> Any:
    config = lm_config(work, tokenizer, iters, compiled)
    run = mlx(work, "train", "gpu_check", "--config", str(config), "--fresh")
    run_dir = run.marker("Run directory: ")
    if not run.ok or run_dir is None:
        return {"error": f"mlx train failed (exit {run.returncode}):\n{run.tail(25)}"}
    run_dir = run_dir.removesuffix(" (resumed)")
    lines = (Path(run_dir) / "metrics" / "metrics.ndjson").read_text().splitlines()
    records = [r for r in map(json.loads, filter(None, lines)) if "tokens_per_sec" in r]
    timed = [r["tokens_per_sec"] for r in records[warmup:]] or [records[-1]["tokens_per_sec"]]
    return {
        "tokens_per_sec": statistics.median(timed),
        "steps_timed": len(timed),
        "first_step_s": records[0]["step_time_ms"] / 1000 if records else None,
        "final_loss": records[-1]["loss"] if records else None,
        "process_wall_s": run.wall_seconds,
    }


def section_lm(args: argparse.Namespace, device: dict[str, Any]) -> dict[str, Any]:
    heading(f"lm at GPT-2-small size, bfloat16, {BATCH} x {ACCUM} x {SHAPE['block_size']} tokens")
    work = Path(tempfile.mkdtemp(prefix="gpu-check-lm-"))
    text, source = find_text(args.text)
    tokenizer, note = prepare(work, text)
    meta = json.loads((work / "data" / "gpu_check" / "meta.json").read_text())
    n = gpt_params(int(meta["vocab_size"]))
    per_token = flops_per_token(n, **SHAPE)
    say(f"text: {source}; tokenizer: {note}; {n / 1e6:.1f}M parameters without wpe")
    out: dict[str, Any] = {"text": source, "tokenizer": note, "params": n}
    out["flops_per_token"] = per_token
    for label, compiled in (("eager", False), ("compiled", True)):
        say(f"\n{label} ...")
        res = lm_run(work, tokenizer, args.iters, args.warmup, compiled)
        if "tokens_per_sec" in res:
            res["mfu"] = mfu(res["tokens_per_sec"], per_token, device["peak_tflops"])
            shown = "-" if res["mfu"] is None else f"{100 * res['mfu']:.1f}%"
            say(f"{label}: {res['tokens_per_sec']:,.0f} tokens/s, MFU {shown}")
        else:
            say(res["error"])
        out[label] = res
    shutil.rmtree(work, ignore_errors=True)  # two GPT-2-small checkpoints, 1.5 GB each
    return out


# --------------------------------------------------------------------------- grpo, tests


def section_grpo(out_dir: Path) -> dict[str, Any]:
    heading("GRPO at GPT-2-small size on the GPU (bench/grpo_large.py, ours only)")
    path = out_dir / "grpo_large.json"
    cmd = [PYTHON, str(REPO / "bench" / "grpo_large.py"), "--only", "train", "--skip-trl"]
    cmd += ["--device", "cuda", "--steps", "3", "--json", str(path)]
    result = subprocess.run(cmd, cwd=REPO, env=child_env())
    if result.returncode != 0 or not path.is_file():
        return {"error": f"bench/grpo_large.py exited {result.returncode}"}
    figures: dict[str, Any] = json.loads(path.read_text())["sections"]["train"]
    return figures


def section_tests() -> dict[str, Any]:
    heading("pytest -m cuda")
    cmd = [PYTHON, "-m", "pytest", "-q", "-rs", "-m", "cuda", "tests"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    say(result.stdout[-4000:] + result.stderr[-2000:])
    lines = result.stdout.strip().splitlines()
    return {"returncode": result.returncode, "summary": lines[-1] if lines else ""}


# --------------------------------------------------------------------------- main


def gpu() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("Error: torch sees no CUDA GPU: run the GPU check on a machine with one.")
    name = torch.cuda.get_device_name(0)
    peak = bf16_peak_tflops(name, os.environ)
    say(f"GPU: {name}; dense bf16 peak: {peak or '-'} TFLOP/s; torch {torch.__version__}")
    if peak is None:
        say(f"(unknown GPU: set {PEAK_ENV} to its dense bfloat16 TFLOP/s for MFU)")
    return {"name": name, "peak_tflops": peak, "torch": torch.__version__}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="lm, GRPO and the cuda tests on one GPU.")
    parser.add_argument("--only", type=section_parser(SECTIONS), metavar="SECTIONS")
    parser.add_argument("--iters", type=int, default=30, help="lm steps per run (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="lm steps not timed (default 5)")
    parser.add_argument("--text", help="the lm corpus (default: tiny-shakespeare, else docs)")
    default = Path(os.environ.get("OUT") or REPO / "gpu_check_out") / "gpu_check.json"
    parser.add_argument("--json", default=str(default), help=f"figures (default {default})")
    args = parser.parse_args(argv)
    if args.iters <= args.warmup:
        parser.error("--iters must exceed --warmup: some steps must be timed")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    sections = args.only or list(SECTIONS)
    figures: dict[str, Any] = {"device": gpu(), "settings": vars(args), "sections": {}}
    if "lm" in sections:
        figures["sections"]["lm"] = section_lm(args, figures["device"])
    if "grpo" in sections:
        figures["sections"]["grpo"] = section_grpo(Path(args.json).parent)
    if "tests" in sections:
        figures["sections"]["tests"] = section_tests()
    finish(figures, started, args.json)
    return 1 if any(failed(v) for v in figures["sections"].values()) else 0


def failed(section: dict[str, Any]) -> bool:
    """A section, or one of its runs, that ended in an error or failing tests."""
    runs = [section, *(v for v in section.values() if isinstance(v, dict))]
    return any("error" in r for r in runs) or section.get("returncode", 0) != 0


if __name__ == "__main__":
    sys.exit(main())
