"""SFT then GRPO through the real ``mlx``: prepare prompt/completion pairs with a model's
chat template, fine-tune it (resumed after a SIGKILL bit for bit), write a GRPO config for
the fine-tuned run with ``mlx generate-config`` and train GRPO from it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("peft")

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from e2e_helpers import Mlx, kill_hook, run_mlx_killed

from mlharness.lm import checkpoints as ckpt
from mlharness.rl.tiny_models import build_tiny_model
from sft_support import sft_config, write_pairs


def test_sft_resumes_after_sigkill_and_grpo_trains_from_it(mlx: Mlx, ws: Path) -> None:
    build_tiny_model(ws / "models" / "tiny", chat_template=True)
    write_pairs(ws / "pairs.jsonl", n=60)
    config = sft_config("models/tiny", "pairs.jsonl", lora={"r": 4})
    (ws / "sft.json").write_text(json.dumps(config), encoding="utf-8")
    mlx("prepare", "sft", "--config", "sft.json", check=0)
    meta = json.loads((ws / "data" / "sft" / "meta.json").read_text())
    assert meta["sft"]["chat_template"] is True and meta["sft"]["train_examples"] == 54
    mlx("train", "sft", "--config", "sft.json", check=0)
    (reference,) = (ws / "runs" / "sft").iterdir()

    # Killed right after its fourth checkpoint (steps 0, 5, best 10, last 10), then resumed.
    argv = ["train", "sft", "--config", "sft.json", "--fresh"]
    run_mlx_killed(
        argv, workspace=ws, hook=kill_hook("mlharness.lm.checkpoints.save_checkpoint", "n == 4")
    )
    (killed,) = [r for r in (ws / "runs" / "sft").iterdir() if r != reference]
    out = mlx("train", "sft", "--config", "sft.json", check=0)
    assert f"Resumed from {killed / 'checkpoints' / 'ckpt_last_00000010'}" in out.stdout
    final = "checkpoints/ckpt_last_00000020"
    a, b = ckpt.load_weights(reference / final), ckpt.load_weights(killed / final)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)

    write_pairs(ws / "prompts.jsonl", n=8, seed=1)
    model = f"runs/sft/{killed.name}"
    mlx("generate-config", "--model-path", model, "--data-path", "prompts.jsonl",
        "--output", "grpo.yaml", "--template", "minimal", check=0)  # fmt: skip
    short = ["--set", "trainer.num_training_steps=2", "--set", "trainer.device=cpu"]
    short += ["--set", "data.max_prompt_len=16", "--set", "data.max_gen_len=4"]
    mlx("train", "--config", "grpo.yaml", *short, check=0)
    (run,) = [p for p in (ws / "runs").iterdir() if p.is_dir() and p.name != "sft"]
    (grpo,) = run.iterdir()
    summary = json.loads((grpo / "summary.json").read_text())
    assert summary["status"] == "completed", summary
    policy = json.loads((grpo / "config.json").read_text())["policy"]
    assert policy["model_type"] == "hf" and policy["base_path"].startswith(str(killed))
