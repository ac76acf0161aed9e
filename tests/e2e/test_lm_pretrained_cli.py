"""nanoGPT checkpoints and our runs as starting points, through the real ``mlx``: sampling a
nanoGPT out_dir (seed 004's legacy fallback), training from one, resuming such a run after
a SIGKILL, and the errors a bad source gets."""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

import torch
from e2e_helpers import Mlx, kill_hook, run_mlx_killed

from lm_support import TINY_LM, corpus_text, nanogpt_state_dict, write_nanogpt_checkpoint
from mlharness.config import deep_merge
from mlharness.lm import checkpoints as ckpt
from mlharness.lm.model import GPT, GPTConfig
from mlharness.lm.tokenizers import CharTokenizer

CHARS = CharTokenizer.from_text(corpus_text()).chars
ARGS = {  # TINY_LM's [model], with biases as GPT-2 and nanoGPT's default have them
    "n_layer": 2,
    "n_head": 2,
    "n_embd": 32,
    "block_size": 32,
    "bias": True,
    "vocab_size": len(CHARS),
    "dropout": 0.0,
}


def _greedy(args: dict[str, Any], prompt: str, new_tokens: int) -> str:
    """What our GPT writes greedily with the weights of ``nanogpt_state_dict(args)``."""
    state = {
        k.removeprefix("_orig_mod.").removeprefix("transformer."): v
        for k, v in nanogpt_state_dict(args).items()
        if not k.endswith(".attn.bias")
    }
    model = GPT(GPTConfig(**args))
    model.load_state_dict(state)
    tokenizer = CharTokenizer(CHARS)
    idx = torch.tensor([tokenizer.encode(prompt)])
    return tokenizer.decode(model.generate(idx, new_tokens, temperature=0)[0].tolist())


def _samples(directory: Path) -> list[str]:
    (found,) = directory.glob("*.json")
    samples: list[str] = json.loads(found.read_text())["samples"]
    return samples


def test_sample_takes_a_nanogpt_checkpoint_as_the_legacy_fallback(mlx: Mlx, ws: Path) -> None:
    args = {**ARGS, "block_size": 16}  # 40 new tokens: past the context, so it shifts too
    write_nanogpt_checkpoint(ws / "out-nano", args, CHARS)
    expected = _greedy(args, "the ", 40)
    greedy = ["--top-k", "1", "--num-samples", "1", "--max-new-tokens", "40", "--start", "the "]
    out = mlx("sample", "tiny", "--run-dir", "out-nano", *greedy, check=0).stdout
    assert f"Checkpoint: {Path('out-nano') / 'ckpt.pt'}" in out
    assert _samples(ws / "out-nano" / "samples") == [expected]
    # No run has trained: the ckpt.pt in the experiment's directory (nanoGPT's out_dir).
    (ws / "runs" / "tiny").mkdir(parents=True)
    for name in ("ckpt.pt", "meta.pkl"):
        shutil.copy(ws / "out-nano" / name, ws / "runs" / "tiny" / name)
    out = mlx("sample", "tiny", *greedy, check=0).stdout
    assert f"Checkpoint: {ws / 'runs' / 'tiny' / 'ckpt.pt'}" in out
    assert _samples(ws / "runs" / "tiny" / "samples") == [expected]


def _write_config(ws: Path, init_from: str, name: str = "tiny.json", **model: Any) -> str:
    config = deep_merge(
        TINY_LM,
        {
            "kind": "lm",
            "init_from": init_from,
            "prepare": {"preparer": "text", "input": "corpus.txt"},
            "model": model,
            "train": {"checkpointing": {"keep": {"last": 10}}},
        },
    )
    (ws / name).write_text(json.dumps(config), encoding="utf-8")
    return name


def test_train_from_nanogpt_and_resume_after_sigkill(mlx: Mlx, ws: Path) -> None:
    (ws / "corpus.txt").write_text(corpus_text(), encoding="utf-8")
    source = write_nanogpt_checkpoint(ws / "out-nano", ARGS, CHARS)
    config = _write_config(ws, "nanogpt:out-nano")  # relative to the config file
    mlx("prepare", "tiny", "--config", config, check=0)
    out = mlx("train", "tiny", "--config", config, check=0)
    assert f"Starting from {source} (iteration 250)" in out.stdout + out.stderr
    (reference,) = (ws / "runs" / "tiny").iterdir()
    assert json.loads((reference / "config.json").read_text())["started_from"]["kind"] == "nanogpt"

    # Killed right after its fourth checkpoint (steps 0, 5, best 10, last 10)...
    argv = ["train", "tiny", "--config", config, "--fresh"]
    hook = kill_hook("mlharness.lm.checkpoints.save_checkpoint", "n == 4")
    run_mlx_killed(argv, workspace=ws, hook=hook)
    (killed,) = [r for r in (ws / "runs" / "tiny").iterdir() if r != reference]
    # ...and resumed after the source changed: its weights must not be applied again.
    write_nanogpt_checkpoint(ws / "out-nano", ARGS, CHARS, seed=1)
    out = mlx("train", "tiny", "--config", config, check=0)
    assert f"Resumed from {killed / 'checkpoints' / 'ckpt_last_00000010'}" in out.stdout
    assert "Starting from" not in out.stdout + out.stderr
    final = "checkpoints/ckpt_last_00000020"
    a, b = ckpt.load_weights(reference / final), ckpt.load_weights(killed / final)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_bad_sources_are_refused_in_one_sentence(mlx: Mlx, ws: Path) -> None:
    (ws / "corpus.txt").write_text(corpus_text(), encoding="utf-8")
    mlx("prepare", "tiny", "--config", _write_config(ws, "scratch"), check=0)
    (ws / "junk.pt").write_text("not a checkpoint")
    torch.save({"model": {}, "model_args": ARGS, "config": argparse.Namespace()}, ws / "obj.pt")
    write_nanogpt_checkpoint(ws / "other-chars", ARGS, CHARS[::-1])
    write_nanogpt_checkpoint(ws / "deeper", {**ARGS, "n_layer": 3}, CHARS)
    cases = {
        "nanogpt:junk.pt": "junk.pt is not a nanoGPT checkpoint (it is not a file written by torch",
        "nanogpt:obj.pt": "obj.pt holds pickled Python objects (argparse.Namespace), which mlx "
        "does not load because unpickling them can run any code",
        "nanogpt:other-chars": f"holds char-level ids of {len(CHARS)} characters (other ones, "
        "or in another order): prepare data with the source's tokenizer",
        "nanogpt:deeper": "and the config's model.n_layer = 2 (the source has 3) cannot apply",
    }
    for init_from, message in cases.items():
        config = _write_config(ws, init_from, "bad.json")
        err = mlx("train", "tiny", "--config", config, check=1).stderr
        assert err.startswith("Error: ") and message in " ".join(err.split()), (init_from, err)
    assert not (ws / "runs").exists()  # refused before any run directory was made

    (ws / "other-chars" / "meta.pkl").write_bytes(pickle.dumps({"itos": argparse.Namespace()}))
    err = mlx("sample", "tiny", "--run-dir", "other-chars", check=1).stderr
    assert "meta.pkl holds pickled Python objects (argparse.Namespace)" in " ".join(err.split())
