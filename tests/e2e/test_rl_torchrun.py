"""GRPO under ``torchrun`` on the CPU (gloo, 2 processes), through the real ``mlx train``.

Two processes with the same global batch train exactly as one; a whole job killed with
SIGKILL resumes, under torchrun again, to the weights of a job that never stopped; LoRA
trains the same way; a process that dies ends the job with a message instead of a hang.

The policy is a tiny random GPT-2 (2 layers, 32 wide) with a character tokenizer; each
launch is a few seconds of start-up and a few of training, on one thread per process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from e2e_helpers import (
    UMASK,
    base_env,
    make_workspace,
    read_json,
    run_dirs,
    run_mlx,
    torchrun,
    torchrun_argv,
    two_nodes,
    write_config,
)

pytestmark = pytest.mark.e2e

REWARDS = Path(__file__).parents[1] / "rl_rewards.py"  # char_share: rewards with a spread

# A reward that kills its own process (as the OOM killer would) at rank 1's second step.
DYING_REWARD = """
import os, signal
from mlharness.rl.rewards import BaseReward, RewardRegistry

calls = [0]

@RewardRegistry.register("dies_on_rank_1")
class DiesOnRank1(BaseReward):
    def compute(self, context):
        return {"reward": 1.0}

    def compute_batch(self, contexts):
        calls[0] += 1
        if os.environ.get("RANK") == "1" and calls[0] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return [self.compute(c) for c in contexts]
"""


def grpo_config(name: str, **trainer: Any) -> dict[str, Any]:
    """3 steps of 2 micro-batches of 2 prompts x 4 completions; batch-scaled advantages
    (gathered across processes) and validation every 2 steps (split across them)."""
    return {
        "kind": "rl",
        "name": name,
        "trainer": {
            "num_training_steps": 3,
            "learning_rate": 1e-2,
            "optimizer_weight_decay": 0.0,
            "ppo_batch_size": 2,
            "grad_accum_steps": 2,
            "num_rollout_samples": 4,
            "grpo_beta": 0.04,
            "scale_rewards": "batch",
            "eval_every": 2,
            "seed": 3,
            "device": "cpu",
            "num_threads": 1,
            **trainer,
        },
        "model": {"model_path": "model"},
        "data": {
            "train_path": "prompts.jsonl",
            "val_path": "val.jsonl",
            "max_prompt_len": 8,
            "max_gen_len": 6,
        },
        "reward_sources": [str(REWARDS)],
        "rewards": [{"name": "char_share", "weight": 1.0}],
        "monitoring": {"log_samples_every": 1, "max_logged_samples": 4},
        "checkpointing": {"save_every": 1, "keep_last_n": 5},
    }


@pytest.fixture(scope="module")
def ddp_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlharness.rl.tiny_models import build_tiny_model

    ws = make_workspace(tmp_path_factory.mktemp("rl_ddp") / "ws")
    build_tiny_model(ws / "model", n_layer=2, n_embd=32, n_head=2, seed=0)
    rows = [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a in range(10) for b in range(3)]
    (ws / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    val = [{"prompt": f"{a}+5=", "completion": str(a + 5)} for a in range(3)]
    (ws / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in val))
    (ws / "dying.py").write_text(DYING_REWARD)
    for name, lora in (("full", False), ("lora", True)):
        config = grpo_config(name)
        if lora:
            config["model"].update(use_lora=True, lora_rank=4, lora_alpha=8)
        write_config(ws / f"{name}.yaml", config)
    return ws


def weights(checkpoint: Path) -> dict[str, Any]:
    """Every tensor of a checkpoint's safetensors files (the model, or LoRA's adapters)."""
    from safetensors.torch import load_file

    out: dict[str, Any] = {}
    for file in sorted(checkpoint.rglob("*.safetensors")):
        out.update({f"{file.name}:{k}": v for k, v in load_file(file).items()})
    assert out, f"no weights in {checkpoint}"
    return out


def last(run: Path) -> Path:
    return run / "checkpoints" / "ckpt_last_00000003"


def steps(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics" / "metrics.ndjson").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "reward" in r]


@pytest.fixture(scope="module")
def full_runs(ddp_ws: Path) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """(one process's run, two processes' run, the torchrun result) of full.yaml."""
    run_mlx(["train", "--config", "full.yaml"], workspace=ddp_ws, check=0)
    result = torchrun(ddp_ws, "train", "--config", "full.yaml", "--fresh")
    assert result.returncode == 0, result.stdout + result.stderr
    one, two = run_dirs(ddp_ws, "full")
    return one, two, result


def test_two_processes_train_as_one(full_runs: tuple[Path, Path, Any]) -> None:
    one, two, result = full_runs
    # Only rank 0 reports and writes: the run it writes, as it starts and at the end.
    assert result.stdout.count(f"Run directory: {two}") == 2, result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    a, b = weights(last(one)), weights(last(two))
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] - b[key]).abs().max().item() <= 1e-6, key
    assert any(not a[k].equal(weights(one / "checkpoints" / "ckpt_last_00000000")[k]) for k in a)
    # The records cover the whole step (both processes' groups), as one process's do.
    ones, twos = steps(one), steps(two)
    assert [r["step"] for r in twos] == [1, 2, 3]
    for r1, r2 in zip(ones, twos, strict=True):
        for key in ("reward", "reward_std", "completion_length", "policy_loss", "kl"):
            assert r2[key] == pytest.approx(r1[key], rel=1e-5, abs=1e-7), key
    vals = [
        r["val_reward"]
        for r in map(json.loads, (two / "metrics/metrics.ndjson").open())
        if "val_reward" in r
    ]
    assert len(vals) == 3  # steps 0, 2 and 3
    samples = (two / "samples" / "step_00000001.jsonl").read_text().splitlines()
    assert samples == (one / "samples" / "step_00000001.jsonl").read_text().splitlines()
    meta = read_json(last(two) / "checkpoint.json")
    assert meta["world_size"] == 2
    assert read_json(two / "summary.json")["status"] == "completed"


def test_lora_trains_the_same_under_torchrun(ddp_ws: Path) -> None:
    run_mlx(["train", "--config", "lora.yaml"], workspace=ddp_ws, check=0)
    result = torchrun(ddp_ws, "train", "--config", "lora.yaml", "--fresh")
    assert result.returncode == 0, result.stdout + result.stderr
    one, two = run_dirs(ddp_ws, "lora")
    a, b = weights(last(one)), weights(last(two))
    assert a.keys() == b.keys() and all("lora" in k for k in a)
    for key in a:
        assert (a[key] - b[key]).abs().max().item() <= 1e-6, key


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_sigkill_of_the_whole_job_then_resume_is_bit_identical(
    ddp_ws: Path, full_runs: tuple[Path, Path, Any]
) -> None:
    reference = full_runs[1]
    before = set(run_dirs(ddp_ws, "full"))
    proc = subprocess.Popen(
        torchrun_argv("train", "--config", "full.yaml", "--fresh"),
        cwd=ddp_ws,
        env=base_env(ddp_ws, {"OMP_NUM_THREADS": "1"}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        umask=UMASK,
    )
    reached, deadline = 0, time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:
        new = sorted(set(run_dirs(ddp_ws, "full")) - before)
        ckpts = list((new[0] / "checkpoints").glob("ckpt_last_*")) if new else []
        reached = max((int(p.name.rsplit("_", 1)[1]) for p in ckpts), default=0)
        if reached >= 1:
            # The node goes away: every worker (each in its own session) and the agent.
            for pid in [*_children(proc.pid), proc.pid]:
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the job ended before step 1 ({reached})"
    (killed,) = sorted(set(run_dirs(ddp_ws, "full")) - before)
    assert read_json(killed / "summary.json")["status"] == "running"

    result = torchrun(ddp_ws, "train", "--config", "full.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Resumed from {killed}" in result.stdout
    a, b = weights(last(reference)), weights(last(killed))
    assert all(a[k].equal(b[k]) for k in a), f"killed after step {reached}"
    timing = ("tokens_per_sec", "step_time_s", "generation_share")

    def untimed(run: Path) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in timing} for r in steps(run)]

    assert untimed(killed) == untimed(reference)


def test_a_process_that_dies_ends_the_job_with_a_message(ddp_ws: Path) -> None:
    result = torchrun(
        ddp_ws,
        "train",
        "--config",
        "full.yaml",
        "--fresh",
        "--set",
        "name=dying",
        "--set",
        'reward_sources=["dying.py"]',
        "--set",
        'rewards=[{"name": "dies_on_rank_1", "weight": 1.0}]',
        timeout=120,  # a hang fails here
    )
    assert result.returncode != 0
    assert "Error: Another process of this torchrun job stopped" in result.stderr
    assert "exitcode  : -9" in result.stderr  # torchrun's report names the process that died
    (run,) = run_dirs(ddp_ws, "dying")
    summary = read_json(run / "summary.json")
    assert summary["status"] == "failed"
    assert "Another process of this torchrun job stopped" in summary["error"]


def test_two_nodes_on_loopback_train_as_one_node(
    ddp_ws: Path, full_runs: tuple[Path, Path, Any]
) -> None:
    """``--nnodes=2`` with c10d rendezvous, one process per "node", as two machines would."""
    before = set(run_dirs(ddp_ws, "full"))
    results = two_nodes([ddp_ws, ddp_ws], "train", "--config", "full.yaml", "--fresh")
    assert [r.returncode for r in results] == [0, 0], [r.stdout + r.stderr for r in results]
    (run,) = sorted(set(run_dirs(ddp_ws, "full")) - before)
    # One node reports (the one c10d gave rank 0), and the run is the one-node run's.
    assert sum(r.stdout.count(f"Run directory: {run}") for r in results) == 2
    a, b = weights(last(full_runs[1])), weights(last(run))
    assert all(a[k].equal(b[k]) for k in a)
