"""GRPO on 2 CPU processes against 1 at the same global batch: how ``torchrun`` scales.

Run it from the repository root with the project's virtual environment::

    .venv/bin/python bench/grpo_processes.py                    # ~3 minutes
    .venv/bin/python bench/grpo_processes.py --steps 20 --rounds 2 --json procs.json

A random Hugging Face GPT-2 (``--layers`` x ``--width``, the 49-token character vocabulary
of :func:`mlharness.rl.tiny_models.build_tiny_model`) trains on generated "a+b=" prompts
through the real ``mlx train``, three ways, alternated round after round:

``one``
    1 process with 2 threads: 2 micro-batches of 1 prompt x 8 completions per step.
``one_1t``
    The same with 1 thread: on small models a second thread can cost more than it gives,
    and a one-process user would pick the faster of the two.
``two``
    ``torchrun --standalone --nproc_per_node=2``, 1 thread each, the same config: each
    process generates, scores and back-propagates one of the 2 micro-batches; the gradients
    are summed by one all-reduce.
``share``
    1 process with 1 thread and half the batch (1 micro-batch): one process's share of
    ``two`` without a partner, so ``two`` against it is what distribution costs.

Seconds per step are the medians of ``metrics.ndjson``'s ``step_time_s`` after the
``--warmup`` steps (rank 0's under torchrun: it waits for the other process at the
all-reduce, so its step is the job's). The scaling is ``one``'s seconds per step over
``two``'s, and the faster one-process setup's over ``two``'s. A last section times a gloo
all-reduce of the model's gradient size on 2 processes (what ``two`` adds per step beyond
waiting for the slower process). The model is random, so the exact-match reward is always
0, yet every step does the full work.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from report import (  # bench/ is on sys.path
    child_env,
    emit,
    finish,
    print_header,
    run_child,
    table,
)

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MLX = Path(PYTHON).with_name("mlx")
RUN_DIR_LINE = "Run directory: "
ALLREDUCE_MODE = "allreduce"
GROUP_SIZE = 8
MAX_COMPLETION = 32
AIM = 1.6  # the aim for 2 processes on 2 cores

# name: (processes, threads per process, micro-batches per step)
SETUPS: dict[str, tuple[int, int, int]] = {
    "one": (1, 2, 2),
    "one_1t": (1, 1, 2),
    "two": (2, 1, 2),
    "share": (1, 1, 1),
}


def config(work: Path, args: argparse.Namespace, micro_batches: int, threads: int) -> str:
    """The rl config of one setup, as YAML (only the batch and the threads differ)."""
    import yaml

    data = {
        "name": "grpo_processes",
        "model": {"model_path": str(work / "model")},
        "data": {
            "train_path": str(work / "prompts.jsonl"),
            "max_prompt_len": 16,
            "max_gen_len": MAX_COMPLETION,
            "shuffle_data": False,
        },
        "trainer": {
            "output_dir": str(work / "runs"),
            "num_training_steps": args.steps,
            "learning_rate": 1e-5,
            "lr_schedule_config": {"name": "constant", "warmup": 0},
            "ppo_batch_size": 1,
            "grad_accum_steps": micro_batches,
            "num_rollout_samples": GROUP_SIZE,
            "grpo_beta": 0.0,
            "loss_type": "dapo",
            "seed": 1234,
            "device": "cpu",
            "num_threads": threads,
        },
        "generation": {"temperature": 1.0, "top_p": 1.0, "top_k": None},
        "rewards": [{"name": "exact_match", "weight": 1.0}],
        "monitoring": {"log_every": 1, "log_samples_every": 0, "max_logged_samples": 0},
        "checkpointing": {"save_every": args.steps + 1, "keep_last_n": 0},
    }
    path = work / f"grpo_{micro_batches}_{threads}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(path)


def setup(work: Path, args: argparse.Namespace) -> int:
    """The random model and the prompts; returns the model's parameter count."""
    import random

    from mlharness.rl.tiny_models import build_tiny_model

    heads = max(1, args.width // 64)
    build_tiny_model(work / "model", n_layer=args.layers, n_embd=args.width, n_head=heads)
    rng = random.Random(0)
    pairs = rng.sample([(a, b) for a in range(100) for b in range(100)], 512)
    rows = [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a, b in pairs]
    (work / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from safetensors.torch import load_file

    return sum(t.numel() for t in load_file(work / "model" / "model.safetensors").values())


def launch(work: Path, args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Run one setup to completion; its per-step figures from the run's metrics."""
    procs, threads, micro = SETUPS[name]
    train = ["train", "--config", config(work, args, micro, threads), "--fresh"]
    if procs == 1:
        cmd = [str(MLX), *train]
    else:
        cmd = [PYTHON, "-m", "torch.distributed.run", "--standalone"]
        cmd += [f"--nproc_per_node={procs}", "-m", "mlharness", *train]
    load = os.getloadavg()[0]
    env = child_env(OMP_NUM_THREADS=str(threads), MLX_WORKSPACE=str(work), HF_HUB_OFFLINE="1")
    run = run_child(cmd, cwd=REPO, env=env)
    run_dir = run.marker(RUN_DIR_LINE)
    if not run.ok or run_dir is None:
        raise SystemExit(f"{name} failed (exit {run.returncode}):\n{run.tail(25)}")
    lines = (Path(run_dir) / "metrics" / "metrics.ndjson").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if "step_time_s" in r][args.warmup :]
    return {
        "s_per_step": statistics.median(r["step_time_s"] for r in records),
        "generation_share": statistics.median(r["generation_share"] for r in records),
        "completion_length": statistics.fmean(r["completion_length"] for r in records),
        "load_before": round(load, 2),
        "process_wall_s": run.wall_seconds,
        "command": " ".join(cmd[1:] if procs == 1 else cmd),
    }


def allreduce(work: Path, numel: int) -> float:
    """Median seconds of a gloo all-reduce of ``numel`` floats between 2 processes."""
    cmd = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [str(Path(__file__).resolve()), "--_child", ALLREDUCE_MODE, str(numel)]
    run = run_child(cmd, cwd=REPO, env=child_env(OMP_NUM_THREADS="1"))
    if not run.ok:
        raise SystemExit(f"the all-reduce timing failed:\n{run.tail(25)}")
    return float(run.result()["s"])


def child_allreduce(numel: int) -> None:
    """Under torchrun: time the all-reduce that sums a step's flat gradient."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    flat = torch.ones(numel)
    times = []
    for _ in range(25):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(flat)
        times.append(time.perf_counter() - t0)
    if dist.get_rank() == 0:
        emit({"s": statistics.median(times[5:])})
    dist.destroy_process_group()


def report(results: dict[str, list[dict[str, Any]]], numel: int, reduce_s: float) -> None:
    """The table, the scaling and where the rest of the step goes."""
    rows = []
    s = {name: statistics.median(r["s_per_step"] for r in runs) for name, runs in results.items()}
    for name, runs in results.items():
        procs, threads, micro = SETUPS[name]
        rows.append(
            [
                f"{name}: {procs} proc x {threads} thr, {micro} x 1 x {GROUP_SIZE}",
                f"{s[name]:.3f}",
                f"{1 / s[name]:.2f}",
                f"{statistics.median(r['generation_share'] for r in runs):.0%}",
                f"{statistics.fmean(r['completion_length'] for r in runs):.1f}",
                ", ".join(str(r["load_before"]) for r in runs),
            ]
        )
    print(table(["setup", "s/step", "steps/s", "generation", "mean len", "load"], rows))
    scaling, best = s["one"] / s["two"], min(s["one"], s["one_1t"]) / s["two"]
    verdict = "meets" if scaling >= AIM else "below"
    print(f"\nScaling, 2 processes against 1 at the same global batch: {scaling:.2f}x", end="")
    print(f" ({verdict} the aim of {AIM}x); against the faster one-process setup {best:.2f}x")
    rounds = zip(results["one"], results["two"], strict=True)
    per_round = ", ".join(f"{a['s_per_step'] / b['s_per_step']:.2f}x" for a, b in rounds)
    print(f"one over two, round by round: {per_round}")
    print(f"Ideal (two = share): {s['one'] / s['share']:.2f}x; ", end="")
    print(f"two takes {s['two'] - s['share']:+.3f} s/step more than one process's share alone")
    print(f"gloo all-reduce of {numel:,} floats on 2 processes: {reduce_s * 1e3:.1f} ms")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="GRPO steps per run (default 12)")
    parser.add_argument("--warmup", type=int, default=2, help="steps left out (default 2)")
    parser.add_argument("--rounds", type=int, default=1, help="alternated rounds (default 1)")
    parser.add_argument("--layers", type=int, default=4, help="GPT-2 layers (default 4)")
    parser.add_argument("--width", type=int, default=256, help="GPT-2 width (default 256)")
    parser.add_argument("--json", metavar="OUT", help="also write every figure to OUT as JSON")
    parser.add_argument("--_child", nargs=2, metavar=("MODE", "ARG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps <= args.warmup:
        parser.error("--steps must be larger than --warmup")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args._child:
        child_allreduce(int(args._child[1]))
        return 0
    started = time.perf_counter()
    machine = print_header(__doc__.split("\n")[0], ("torch", "transformers"))
    with tempfile.TemporaryDirectory(prefix="grpo_processes_") as tmp:
        work = Path(tmp)
        numel = setup(work, args)
        print(f"model: {args.layers} x {args.width} GPT-2, {numel:,} parameters")
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in SETUPS}
        for k in range(args.rounds):
            for name in SETUPS:
                print(f"round {k + 1}/{args.rounds}: {name} ...", flush=True)
                results[name].append(launch(work, args, name))
        reduce_s = allreduce(work, numel)
    report(results, numel, reduce_s)
    figures: dict[str, Any] = {**machine, "args": vars(args), "runs": results}
    figures |= {"params": numel, "allreduce_s": reduce_s}
    finish(figures, started, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
