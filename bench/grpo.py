"""Benchmark our GRPO trainer against TRL's ``GRPOTrainer``, side by side on this machine.

Run it from the repository root with the project's virtual environment::

    .venv/bin/python bench/grpo.py                          # everything, ~2 minutes
    .venv/bin/python bench/grpo.py --steps 10 --only train  # a quick look
    .venv/bin/python bench/grpo.py --repeats 3 --json grpo.json
    .venv/bin/python bench/grpo.py --only profile           # where our step time goes

TRL is a bench-only extra (``pip install "mlharness[bench]"``). Without it, only our side
runs and the TRL column shows the issue's reference figures, marked ``*``.

One tiny random Hugging Face GPT-2 (4 layers, 128 wide, 4 heads, the 49-token character
vocabulary of :func:`mlharness.rl.tiny_models.build_tiny_model`) is saved to a scratch
directory, with generated "a+b=" prompts whose answers are the completions (JSONL for us,
a ``datasets.Dataset`` built from the same lines for TRL). Both sides then run the same
settings: 1 prompt x 8 completions per step, at most 32 completion tokens, temperature 1,
no top-k/top-p, the same constant learning rate, AdamW (0.9, 0.999) without weight decay,
gradient clipping at 1.0, beta 0 (no reference model; TRL's default), TRL's default
``loss_type="dapo"`` and ``scale_rewards="group"``, one pass per batch, prompts in file
order, an exact-match reward, float32 on CPU with ``--threads`` threads and
``OMP_WAIT_POLICY=PASSIVE`` for both. TRL's two defaults that would slow it down on this
task are turned off to compare equal work: ``bf16`` (mixed precision; we train in float32)
and ``gradient_checkpointing`` (we keep activations). Both stop a completion at the EOS
token (kept in the completion). Neither logs more than its defaults: TRL with
``report_to="none"``, ``save_strategy="no"``, its default ``logging_steps``; ours with no
sample logging and only the final checkpoint.

Sections (``--only``, comma-separated):

``import``
    ``from trl import GRPOTrainer`` against ``import mlharness.rl.trainer``, alone and with
    the transformers modules a Hugging Face GPT-2 policy loads (what ``mlx train`` imports
    before its first step here), and ``import torch``, which all include; each in a fresh
    interpreter, alternated; the median of ``--import-repeats``.
``train``
    ``--steps`` GRPO steps through TRL (a script process: the trainer, a ``TrainerCallback``
    timing ``on_step_begin``/``on_step_end``, ``model.generate`` timed) and through ``mlx
    train --config <generated yaml>`` (its ``metrics.ndjson``: ``step_time_s``,
    ``generation_share``, ``completion_length``), alternated ``--repeats`` times.
    Seconds per step are medians over the steps after the first (warm-up); tokens/s are
    completion tokens (EOS included) over those steps' time. "By wall clock" also counts
    what happens between steps (logging). Process wall time is the whole process, start
    to exit; peak RSS is the larger of the polled RSS and the child's ``ru_maxrss``.
``profile``
    Our trainer in-process (``GRPOTrainer.train_step``) with timers around each phase:
    generation (prefill, one-token decode forwards, sampling and bookkeeping), rewards,
    the training forward, log-probabilities, loss, backward, clipping and the optimizer;
    what the process spends outside the steps (imports, loading, the final checkpoint,
    the metrics files and ``curves.png``); then micro-benchmarks, each variant measured
    once per round, round after round: one decode step at B=8 (``Policy.decoder``, the
    plain-tensor GPT-2 path our rollouts take, HF's forward with ``DynamicCache`` (the
    generic path), HF ``generate`` as TRL calls it, our GPT's decoder on the same
    weights; with 1 thread and with oneDNN off), one training forward+backward, and one
    AdamW step (foreach against fused). ``--cprofile`` adds the functions with the most
    self time.

The model is random, so the exact-match reward is always 0 and no weight changes, yet
every step does the full work (generation, forward, backward, optimizer step) on both
sides. A random model ends a completion with EOS (1 of 49 tokens) about as often on both
sides: about half the completions reach 32 tokens, the mean length is about 24; the
summary shows both, and tokens/s accounts for any difference.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import report  # bench/ is on sys.path when a script runs
from report import (
    ChildRun,
    add_common_options,
    child_env,
    emit,
    finish,
    fmt,
    heading,
    median,
    print_header,
    ratio,
    run_child,
    run_child_mode,
    save_json,
    say,
    self_command,
    table,
)

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MLX = Path(PYTHON).with_name("mlx")
SECTIONS = ("import", "train", "profile")

# The task, the same on both sides.
MODEL_SHAPE = {"n_layer": 4, "n_embd": 128, "n_head": 4, "context": 128}
GROUP_SIZE = 8  # completions per prompt
PROMPTS_PER_STEP = 1
MAX_COMPLETION = 32  # tokens
MAX_PROMPT = 16  # tokens (the prompts have at most 6)
LEARNING_RATE = 1e-5
SEED = 1234
NUM_PROMPTS = 512  # generated "a+b=" problems; steps use them in file order
WARMUP_STEPS = 1  # steps left out of the medians

# Targets from the GRPO issue.
MIN_STEPS_RATIO = 2.0
MAX_PROCESS_RATIO = 1.0

# TRL 1.16 on this machine class, from the issue; shown (marked "*") when TRL is not measured.
ISSUE_REFERENCE: dict[str, float] = {
    "s_per_step": 0.17,
    "tokens_per_sec": 1145.0,
    "generation_share": 0.63,
    "import_s": 5.8,
}

IMPORTS = {
    "trl": "from trl import GRPOTrainer",
    "ours": "import mlharness.rl.trainer",
    # What mlx train imports before its first step with a Hugging Face policy.
    "ours_hf": "import mlharness.rl.trainer; import transformers.models.gpt2.modeling_gpt2",
    "torch": "import torch",
}
RUN_DIR_LINE = "Run directory: "
TRL_MISSING = (
    'TRL is not installed, so only our side runs: pip install "mlharness[bench]" '
    f'(here: {Path(PYTHON).parent / "pip"} install -e ".[bench]") to measure TRL\'s side.'
)


# --------------------------------------------------------------------------- helpers


def versions() -> dict[str, str | None]:
    return report.versions(("torch", "transformers", "trl", "accelerate", "datasets"))


def bench_env(work: Path, threads: int) -> dict[str, str]:
    """Both sides: the same thread count, passive OpenMP waits, offline, runs in ``work``."""
    return child_env(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        MLX_WORKSPACE=str(work),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONWARNINGS="ignore",
    )


def child(mode: str, spec: dict[str, Any], work: Path, threads: int, **kwargs: Any) -> ChildRun:
    cmd = self_command(__file__, mode, spec)
    return run_child(cmd, cwd=REPO, env=bench_env(work, threads), **kwargs)


def failure(what: str, run: ChildRun) -> dict[str, Any]:
    return {"error": f"{what} failed (exit {run.returncode}):\n{run.tail(25)}"}


# --------------------------------------------------------------------------- setup


def problems(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` distinct "a+b=" prompts (a, b < 100) with their sums as completions."""
    rng = random.Random(seed)
    pairs = rng.sample([(a, b) for a in range(100) for b in range(100)], n)
    return [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a, b in pairs]


def our_config(work: Path, steps: int, threads: int, runs_dir: Path) -> dict[str, Any]:
    """The rl config ``mlx train`` runs: TRL's settings in our schema."""
    return {
        "name": "grpo_bench",
        "description": "bench/grpo.py: the settings of the TRL side, in our schema.",
        "model": {"model_path": str(work / "model")},
        "data": {
            "train_path": str(work / "prompts.jsonl"),
            "max_prompt_len": MAX_PROMPT,
            "max_gen_len": MAX_COMPLETION,
            "shuffle_data": False,  # file order, as TRL's shuffle_dataset=False
        },
        "trainer": {
            "output_dir": str(runs_dir),
            "num_training_steps": steps,
            "learning_rate": LEARNING_RATE,
            "optimizer_beta1": 0.9,
            "optimizer_beta2": 0.999,  # TrainingArguments' adam_beta2
            "optimizer_weight_decay": 0.0,  # TrainingArguments' weight_decay
            "lr_schedule_config": {"name": "constant", "warmup": 0},
            "ppo_batch_size": PROMPTS_PER_STEP,
            "num_rollout_samples": GROUP_SIZE,
            "grad_accum_steps": 1,
            "num_iterations": 1,
            "grpo_beta": 0.0,
            "epsilon": 0.2,
            "loss_type": "dapo",
            "scale_rewards": "group",
            "max_grad_norm": 1.0,
            "seed": SEED,
            "device": "cpu",
            "num_threads": threads,
        },
        "generation": {"temperature": 1.0, "top_p": 1.0, "top_k": None},
        "rewards": [{"name": "exact_match", "weight": 1.0}],
        "monitoring": {"log_every": 1, "log_samples_every": 0, "max_logged_samples": 0},
        # keep_last_n 0: no checkpoint but the final one (mlx train always writes that).
        "checkpointing": {"save_every": steps + 1, "keep_last_n": 0},
    }


def write_config(path: Path, config: dict[str, Any]) -> Path:
    import yaml  # a dependency of the project; only the parent writes YAML

    path.write_text(
        "# Generated by bench/grpo.py: the TRL side's settings in our schema.\n"
        + yaml.safe_dump(config, sort_keys=False),
        encoding="utf-8",
    )
    return path


def setup(work: Path, threads: int) -> dict[str, Any] | None:
    """The model (in a child: it needs transformers) and the prompts; None if it worked."""
    rows = problems(NUM_PROMPTS)
    path = work / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    run = child("setup", {"model": str(work / "model")}, work, threads)
    if not run.ok:
        return failure("building the tiny model", run)
    return None


# --------------------------------------------------------------------------- import section


def section_import(work: Path, threads: int, repeats: int, with_trl: bool) -> dict[str, Any]:
    heading(f"Import time: fresh interpreters, median of {repeats}, alternated", load=True)
    names = [n for n in IMPORTS if with_trl or n != "trl"]
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(repeats):
        for name in names:
            run = child("import", {"statement": IMPORTS[name]}, work, threads)
            if not run.ok:
                return {"error": failure(IMPORTS[name], run)["error"]}
            seconds[name].append(float(run.result()["seconds"]))
    out: dict[str, Any] = {}
    for name in names:
        out[name] = {"statement": IMPORTS[name], "seconds": seconds[name]}
        say(
            f"  {IMPORTS[name]:<76} {fmt(median(seconds[name]))} s  "
            f"(runs: {', '.join(f'{s:.2f}' for s in seconds[name])})"
        )
    return out


# --------------------------------------------------------------------------- train section


def summarise_steps(
    step_s: list[float],
    gen_s: list[float | None],
    tokens: list[float],
    mean_len: list[float],
    truncated: list[float],
    wall_end: list[float],
) -> dict[str, Any]:
    """Per-run figures from per-step series (the first WARMUP_STEPS left out)."""
    k = WARMUP_STEPS if len(step_s) > WARMUP_STEPS else 0
    timed, timed_gen, timed_tok = step_s[k:], gen_s[k:], tokens[k:]
    s_step = median(timed)
    gen_known = [g for g in timed_gen if g is not None]
    wall_per_step = None
    if len(wall_end) > k + 1:
        wall_per_step = (wall_end[-1] - wall_end[k]) / (len(wall_end) - 1 - k)
    return {
        "steps": len(step_s),
        "s_per_step": s_step,
        "s_per_step_p10": statistics.quantiles(timed, n=10)[0] if len(timed) > 1 else s_step,
        "steps_per_sec": 1 / s_step if s_step else None,
        "s_per_step_wall": wall_per_step,
        "tokens_per_sec": sum(timed_tok) / sum(timed) if timed else None,
        "generation_share": (
            sum(gen_known) / sum(timed) if timed and len(gen_known) == len(timed) else None
        ),
        "mean_completion_len": statistics.fmean(mean_len) if mean_len else None,
        "truncated_share": statistics.fmean(truncated) if truncated else None,
        "sum_step_s": sum(step_s),
        "step_s": step_s,
        "mean_len_per_step": mean_len,
    }


def trl_train(work: Path, steps: int, threads: int, label: str) -> dict[str, Any]:
    spec = {
        "model": str(work / "model"),
        "data": str(work / "prompts.jsonl"),
        "output_dir": str(work / f"trl-{label}"),
        "steps": steps,
        "threads": threads,
    }
    run = child("trl-train", spec, work, threads)
    if not run.ok:
        return failure("TRL's GRPOTrainer", run)
    res = run.result()
    steps_data = res.pop("per_step")
    out = summarise_steps(
        [s["step_s"] for s in steps_data],
        [s["gen_s"] for s in steps_data],
        [sum(s["lengths"]) for s in steps_data],
        [statistics.fmean(s["lengths"]) for s in steps_data if s["lengths"]],
        [s["truncated"] / len(s["lengths"]) for s in steps_data if s["lengths"]],
        [s["end"] for s in steps_data],
    )
    out.update(res)
    out["train_outside_s"] = res["train_s"] - out["sum_step_s"]
    out["process_wall_s"] = run.wall_seconds
    out["outside_steps_s"] = run.wall_seconds - out["sum_step_s"]
    out["peak_rss_mb"] = run.peak_rss_mb
    return out


def our_train(work: Path, steps: int, threads: int, label: str) -> dict[str, Any]:
    if not MLX.exists():
        return {"error": f"{MLX} not found: install the project first (make dev)."}
    runs_dir = work / f"ours-{label}"
    settings = our_config(work, steps, threads, runs_dir)
    config = write_config(work / f"grpo_bench_{label}.yaml", settings)
    cmd = [str(MLX), "train", "--config", str(config), "--fresh"]
    run = run_child(cmd, cwd=REPO, env=bench_env(work, threads), tail_dir=runs_dir)
    if not run.ok:
        return failure("mlx train", run)
    run_dir = run.marker(RUN_DIR_LINE)
    if run_dir is None:
        return {"error": f"mlx train printed no run directory:\n{run.tail()}"}
    metrics = Path(run_dir) / "metrics" / "metrics.ndjson"
    records = [json.loads(s) for s in metrics.read_text().splitlines() if s.strip()]
    records = [r for r in records if "step_time_s" in r]
    seen = {int(r["step"]): t for t, r in run.records if "step_time_s" in r}
    out = summarise_steps(
        [float(r["step_time_s"]) for r in records],
        [float(r["step_time_s"]) * float(r["generation_share"]) for r in records],
        [float(r["completion_length"]) * GROUP_SIZE * PROMPTS_PER_STEP for r in records],
        [float(r["completion_length"]) for r in records],
        [float(r["truncation_rate"]) for r in records],
        # When the tailer (polling every 50 ms) saw each record: wall clock per step.
        [seen[int(r["step"])] for r in records] if len(seen) == len(records) else [],
    )
    out.update(
        {
            "command": " ".join(["mlx", *cmd[1:]]),
            "config": str(config),
            "config_settings": settings,
            "run_dir": run_dir,
            "process_wall_s": run.wall_seconds,
            "outside_steps_s": run.wall_seconds - out["sum_step_s"],
            "peak_rss_mb": run.peak_rss_mb,
        }
    )
    return out


def describe_run(name: str, res: dict[str, Any]) -> None:
    if "error" in res:
        say(f"  {name}: {res['error']}")
        return
    say(
        f"  {name}: {fmt(res['s_per_step'], 3)} s/step (p10 {fmt(res['s_per_step_p10'], 3)}, "
        f"wall clock {fmt(res['s_per_step_wall'], 3)}), {fmt(res['tokens_per_sec'], 0)} "
        f"tokens/s, generation {fmt(_pct(res['generation_share']), 0)}%, mean completion "
        f"{fmt(res['mean_completion_len'], 1)} tokens ({fmt(_pct(res['truncated_share']), 0)}% "
        f"hit {MAX_COMPLETION}), process {fmt(res['process_wall_s'], 1)} s "
        f"({fmt(res['outside_steps_s'], 1)} s outside steps), peak RSS "
        f"{fmt(res['peak_rss_mb'], 0)} MB"
    )


def _pct(x: float | None) -> float | None:
    return None if x is None else 100 * x


def section_train(
    work: Path, steps: int, threads: int, repeats: int, with_trl: bool
) -> dict[str, Any]:
    heading(
        f"Training: {steps} steps of {PROMPTS_PER_STEP} prompt x {GROUP_SIZE} completions "
        f"(<= {MAX_COMPLETION} tokens), {threads} thread(s), {repeats} round(s)",
        load=True,
    )
    out: dict[str, Any] = {"trl": [], "ours": []}
    for r in range(1, repeats + 1):
        if with_trl:
            say(f"round {r}: TRL GRPOTrainer ...")
            out["trl"].append(trl_train(work, steps, threads, f"r{r}"))
            describe_run("TRL ", out["trl"][-1])
        say(f"round {r}: mlx train --config ... ")
        out["ours"].append(our_train(work, steps, threads, f"r{r}"))
        describe_run("ours", out["ours"][-1])
    if out["ours"] and "command" in out["ours"][0]:
        say(
            f"  our command: {out['ours'][0]['command']} (--keep keeps the YAML; --json "
            "saves its settings)"
        )
    return out


def across(runs: list[dict[str, Any]], key: str) -> float | None:
    """The median of one figure over the runs that have it."""
    values = [float(r[key]) for r in runs if "error" not in r and r.get(key) is not None]
    return median(values)


# --------------------------------------------------------------------------- profile section


def section_profile(
    work: Path,
    steps: int,
    threads: int,
    profile_steps: int,
    cprofile: bool,
    trl: list[dict[str, Any]],
) -> dict[str, Any]:
    heading(
        f"Profile of our side: {profile_steps} train_step calls in-process, then micro-benchmarks",
        load=True,
    )
    runs_dir = work / "ours-profile"
    config = write_config(
        work / "grpo_bench_profile.yaml", our_config(work, steps, threads, runs_dir)
    )
    spec = {"config": str(config), "steps": profile_steps, "threads": threads, "cprofile": cprofile}
    run = child("profile", spec, work, threads)
    if not run.ok:
        return failure("profiling our trainer", run)
    res = run.result()
    print_profile(res, [r for r in trl if "error" not in r])
    return res


def print_profile(res: dict[str, Any], trl: list[dict[str, Any]]) -> None:
    n = res["steps"]
    step_ms = 1000 * res["train_step_s"] / n
    rows = []
    for label, seconds, calls in res["phases"]:
        per_step = 1000 * seconds / n
        rows.append(
            [
                label,
                fmt(per_step, 1),
                fmt(100 * per_step / step_ms, 1),
                fmt(calls / n, 0),
                fmt(1000 * seconds / calls if calls else None, 3),
            ]
        )
    rows.append(["train_step (total)", fmt(step_ms, 1), "100.0", "1", fmt(step_ms, 3)])
    say(table(["phase (ours, per step)", "ms/step", "% of step", "calls/step", "ms/call"], rows))
    say(
        f"  {res['decode_steps'] / n:.1f} one-token decode steps and "
        f"{res['tokens'] / n:.0f} completion tokens per step; metrics logging after each "
        f"step (outside train_step): {fmt(1000 * res['log_s'] / n, 2)} ms."
    )

    say("\nOutside the steps, ours (this process) and TRL's (training process, median):")
    rows = [[label, fmt(seconds, 2), ""] for label, seconds in res["startup"]]
    if trl:
        rows.append(["TRL: import torch + trl", "", fmt(across(trl, "import_s"), 2)])
        rows.append(["TRL: dataset, GRPOConfig, GRPOTrainer()", "", fmt(across(trl, "setup_s"), 2)])
        rows.append(["TRL: train() outside the steps", "", fmt(across(trl, "train_outside_s"), 2)])
    say(table(["phase", "ours (s)", "TRL (s)"], rows))

    say(f"\nOne decode step at B={GROUP_SIZE} after a 6-token prompt (median of 5 x 31 steps):")
    rows = [
        [m["label"], fmt(m["ms_per_token"], 3), fmt(GROUP_SIZE / m["ms_per_token"] * 1000, 0)]
        for m in res["decode_bench"]
    ]
    say(table(["decode path", "ms/step", "tokens/s"], rows))
    say(f"  {res['gelu_note']}")
    say(
        f"\nOne training forward + backward, {GROUP_SIZE} rows x {6 + MAX_COMPLETION - 1} tokens "
        "(logits, token log-probs, sum, backward; median of 5):"
    )
    say(table(["training pass", "ms"], [[m["label"], fmt(m["ms"], 2)] for m in res["train_bench"]]))
    say("\nOne optimizer step on the policy's parameters (median of 20):")
    say(table(["optimizer", "ms"], [[m["label"], fmt(m["ms"], 2)] for m in res["optim_bench"]]))
    if res.get("cprofile"):
        say(f"\ncProfile over {n} more steps, most self time first:")
        rows = [
            [f[:70], str(calls), fmt(1000 * tot / n, 2), fmt(1000 * cum / n, 2)]
            for f, calls, tot, cum in res["cprofile"]
        ]
        say(table(["function", "calls", "self ms/step", "cum ms/step"], rows))


# --------------------------------------------------------------------------- child modes


def child_setup(spec: dict[str, Any]) -> None:
    from mlharness.rl.tiny_models import build_tiny_model

    build_tiny_model(Path(spec["model"]), arch="gpt2", seed=0, **MODEL_SHAPE)
    emit({"model": spec["model"]})


def child_import(spec: dict[str, Any]) -> None:
    start = time.perf_counter()
    exec(spec["statement"], {})  # the statement under test, in a fresh interpreter
    emit({"seconds": time.perf_counter() - start})


def child_trl_train(spec: dict[str, Any]) -> None:
    """TRL's side: what a user's script would do, plus step, generation and length timers."""
    import resource

    start = time.perf_counter()
    import torch

    torch.set_num_threads(spec["threads"])
    from trl import GRPOConfig, GRPOTrainer

    imported = time.perf_counter()
    from datasets import Dataset
    from transformers import TrainerCallback

    with open(spec["data"], encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    dataset = Dataset.from_list([{"prompt": r["prompt"], "answer": r["completion"]} for r in rows])

    per_step: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    eos_ids: set[int] = set()

    def normalise(text: str) -> str:  # as our exact_match: strip, squeeze, final '.', case
        return " ".join(text.strip().split()).removesuffix(".").strip().lower()

    def exact_match(completions: list[str], answer: list[str], **kwargs: Any) -> list[float]:
        ids = kwargs.get("completion_ids") or []
        current.setdefault("lengths", []).extend(len(c) for c in ids)
        current["truncated"] = current.get("truncated", 0) + sum(
            1 for c in ids if not c or c[-1] not in eos_ids
        )
        return [
            float(normalise(c) == normalise(a)) for c, a in zip(completions, answer, strict=True)
        ]

    class StepTimer(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            current.clear()
            current["begin"] = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            end = time.perf_counter()
            per_step.append(
                {
                    "step_s": end - current["begin"],
                    "end": end - start,
                    "gen_s": current.get("gen_s", 0.0),
                    "lengths": current.get("lengths", []),
                    "truncated": current.get("truncated", 0),
                }
            )

    config = GRPOConfig(
        output_dir=spec["output_dir"],
        max_steps=spec["steps"],
        per_device_train_batch_size=GROUP_SIZE * PROMPTS_PER_STEP,
        num_generations=GROUP_SIZE,
        gradient_accumulation_steps=1,
        num_iterations=1,
        max_completion_length=MAX_COMPLETION,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        max_grad_norm=1.0,
        beta=0.0,
        epsilon=0.2,
        loss_type="dapo",
        scale_rewards="group",
        shuffle_dataset=False,
        seed=SEED,
        use_cpu=True,
        bf16=False,  # TRL's default is bf16 mixed precision; we train in float32
        gradient_checkpointing=False,  # TRL's default recomputes activations; we keep them
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        **spec.get("settings", {}),  # bench/grpo_large.py: disable_dropout
    )
    trainer = GRPOTrainer(
        model=spec["model"],
        reward_funcs=exact_match,
        args=config,
        train_dataset=dataset,
        callbacks=[StepTimer()],
        peft_config=trl_lora(spec.get("lora")),
    )
    eos_ids.update(int(i) for i in trainer.eos_token_ids)
    model = trainer.model
    generate = model.generate

    def timed_generate(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return generate(*args, **kwargs)
        finally:
            current["gen_s"] = current.get("gen_s", 0.0) + time.perf_counter() - t

    model.generate = timed_generate  # TRL calls the unwrapped model's generate: this one
    ready = time.perf_counter()
    trainer.train()
    done = time.perf_counter()
    if any(s["gen_s"] == 0 for s in per_step):  # a TRL that generates elsewhere: say so
        for s in per_step:
            s["gen_s"] = None
    emit(
        {
            "per_step": per_step,
            "import_s": imported - start,
            "setup_s": ready - imported,
            "train_s": done - ready,
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads(),
            "settings": {
                k: getattr(config, k)
                for k in (
                    "loss_type",
                    "scale_rewards",
                    "beta",
                    "learning_rate",
                    "lr_scheduler_type",
                    "bf16",
                    "gradient_checkpointing",
                    "logging_steps",
                    "generation_batch_size",
                    "steps_per_generation",
                )
            },
            "dtype": str(next(model.parameters()).dtype),
            "versions": versions(),
        }
    )


def trl_lora(lora: dict[str, Any] | None) -> Any:
    """PEFT's LoraConfig for TRL from our settings (bench/grpo_large.py); None: full."""
    if not lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
        fan_in_fan_out=True,  # GPT-2's Conv1D, as ours
        task_type="CAUSAL_LM",
    )


class Timers:
    """Accumulated seconds and calls of wrapped callables, by label."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def add(self, label: str, seconds: float) -> None:
        self.seconds[label] = self.seconds.get(label, 0.0) + seconds
        self.calls[label] = self.calls.get(label, 0) + 1

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        original = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(label, time.perf_counter() - t)

        setattr(owner, attr, timed)

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def child_profile(spec: dict[str, Any]) -> None:
    """Our side in-process: startup phases, timed phases of train_step, micro-benchmarks."""
    startup: list[list[Any]] = []
    t = time.perf_counter()
    import torch

    from mlharness.rl import grpo as grpo_mod
    from mlharness.rl import sampling as sampling_mod
    from mlharness.rl import trainer as trainer_mod
    from mlharness.rl.config import load_rl_config

    startup.append(["import mlharness.rl.trainer (with torch)", time.perf_counter() - t])
    t = time.perf_counter()
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache  # noqa: F401
    from transformers.models.gpt2 import modeling_gpt2  # noqa: F401

    startup.append(["import transformers (what an HF policy needs)", time.perf_counter() - t])
    timers = Timers()
    timers.wrap(trainer_mod, "load_policy", "load")
    t = time.perf_counter()
    config = load_rl_config(spec["config"])
    trainer = trainer_mod.GRPOTrainer(config, fresh=True, progress=False)
    init = time.perf_counter() - t
    startup.append(["  from_pretrained: model and tokenizer", timers.seconds["load"]])
    startup.append(
        ["  rest of GRPOTrainer() (data, optimizer, run dir)", init - timers.seconds["load"]]
    )
    timers.reset()
    policy = trainer.policy
    decode_calls = {"n": 0}

    # Generation: the rollout call, and inside it every model step (prefill or one token).
    timers.wrap(sampling_mod, "generate", "generation")
    make_decoder = policy.decoder

    def timed_decoder(batch_size: int, int8: bool = False) -> Callable[[Any], Any]:
        t = time.perf_counter()
        step = make_decoder(batch_size, int8)
        timers.add("  decoder set-up (LoRA folding, int8 copy)", time.perf_counter() - t)
        first = [True]

        def timed_step(ids: Any) -> Any:
            t = time.perf_counter()
            out = step(ids)
            label = "  prefill forward" if first[0] else "  decode forward (1 token)"
            timers.add(label, time.perf_counter() - t)
            decode_calls["n"] += 0 if first[0] else 1
            first[0] = False
            return out

        return timed_step

    policy.decoder = timed_decoder  # type: ignore[method-assign]
    timers.wrap(trainer.sampler.rewards, "score", "rewards")
    timers.wrap(trainer.tokenizer, "decode", "decode completions to text")
    timers.wrap(trainer.update, "advantages", "advantages")
    timers.wrap(trainer.update, "apply", "update")
    timers.wrap(policy, "logits", "  training forward (logits)")
    timers.wrap(grpo_mod, "token_logprobs", "  token log-probs")
    timers.wrap(grpo_mod, "grpo_loss", "  GRPO loss")
    timers.wrap(trainer.update, "_backward", "  backward")
    timers.wrap(torch.nn.utils, "clip_grad_norm_", "  clip grad norm")
    timers.wrap(trainer.optimizer, "step", "  AdamW step")
    timers.wrap(trainer, "_log", "metrics logging")

    def one_step() -> dict[str, Any]:
        t = time.perf_counter()
        record = trainer.train_step()
        timers.add("train_step", time.perf_counter() - t)
        trainer._log(record)  # as fit() does after each step
        return record

    one_step()  # warm-up
    timers.reset()
    decode_calls["n"] = 0
    tokens = 0.0
    for _ in range(spec["steps"]):
        tokens += one_step()["completion_length"] * GROUP_SIZE * PROMPTS_PER_STEP
    s, c = dict(timers.seconds), dict(timers.calls)
    gen_parts = (
        "  decoder set-up (LoRA folding, int8 copy)",
        "  prefill forward",
        "  decode forward (1 token)",
    )
    gen_rest = s.get("generation", 0.0) - sum(s.get(k, 0.0) for k in gen_parts)
    upd_parts = [k for k in s if k.startswith("  ") and k not in gen_parts]
    upd_rest = s.get("update", 0.0) - sum(s[k] for k in upd_parts)
    top = ("generation", "rewards", "decode completions to text", "advantages", "update")
    other = s["train_step"] - sum(s.get(k, 0.0) for k in top)

    def row(label: str) -> list[Any]:
        return [label, s.get(label, 0.0), c.get(label, 0)]

    phases = [
        row("generation"),
        row("  decoder set-up (LoRA folding, int8 copy)"),
        row("  prefill forward"),
        row("  decode forward (1 token)"),
        ["  sampling + rollout bookkeeping", gen_rest, decode_calls["n"]],
        row("decode completions to text"),
        row("rewards"),
        row("advantages"),
        row("update"),
        *[row(k) for k in upd_parts],
        ["  zero_grad, batching, other", upd_rest, spec["steps"]],
        ["other (prompts, records)", other, spec["steps"]],
    ]

    n_decode = decode_calls["n"]
    cprofiled = cprofile_steps(one_step, spec["steps"]) if spec.get("cprofile") else None

    # The end of a run: mlx train writes the final checkpoint, then the metrics files,
    # curves.png and the summary.
    trainer.config.checkpointing.keep_last_n = 1  # so that save() writes at this step
    t = time.perf_counter()
    trainer.save("last")
    startup.append(["final checkpoint", time.perf_counter() - t])
    t = time.perf_counter()
    trainer._finish("completed")
    startup.append(["metrics.json/.md, curves.png, summary", time.perf_counter() - t])

    result: dict[str, Any] = {
        "steps": spec["steps"],
        "train_step_s": s["train_step"],
        "phases": phases,
        "decode_steps": n_decode,
        "tokens": tokens,
        "log_s": s.get("metrics logging", 0.0),
        "threads": torch.get_num_threads(),
        "startup": startup,
    }
    if cprofiled is not None:
        result["cprofile"] = cprofiled
    if spec.get("micro", True):
        result.update(micro_benchmarks(trainer, torch))
    emit(result)


def micro_benchmarks(trainer: Any, torch: Any) -> dict[str, Any]:
    """One decode step, one training pass and one AdamW step at the step's shape."""
    from mlharness.lm.model import GPT, GPTConfig, _without_onednn
    from mlharness.rl import grpo as grpo_mod
    from mlharness.rl.policy import Policy, add_lora, frozen_copy

    policy: Policy = trainer.policy
    hf = policy.model
    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    B, P = GROUP_SIZE * PROMPTS_PER_STEP, 6
    prompt = torch.randint(3, 49, (B, P), generator=torch.Generator().manual_seed(0))

    cfg = hf.config
    gpt = GPT(
        GPTConfig(
            block_size=cfg.n_positions,
            vocab_size=cfg.vocab_size,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            n_embd=cfg.n_embd,
            dropout=float(cfg.resid_pdrop),  # the HF model's dropout, for the training pass
            bias=True,
        )
    )
    # The same weights: Hugging Face's Conv1D layers store Linear weights transposed.
    ours_sd = gpt.state_dict()
    for name, value in hf.state_dict().items():
        key = name.removeprefix("transformer.")
        if key in ours_sd and key != "lm_head.weight":
            transposed = key.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
            ours_sd[key] = value.t() if transposed else value
    gpt.load_state_dict(ours_sd)
    hf.eval()
    gpt.eval()

    def interleaved(cases: list[tuple[str, Callable[[], float]]], rounds: int) -> list[list[Any]]:
        """Each case once per round, round after round (load drift hits all alike); the first
        round is a warm-up; the median of the others, in ms."""
        times: list[list[float]] = [[] for _ in cases]
        for r in range(rounds + 1):
            for i, (_, measure) in enumerate(cases):
                value = measure()
                if r:
                    times[i].append(value)
        torch.set_num_threads(threads)
        return [
            [label, float(statistics.median(t))] for (label, _), t in zip(cases, times, strict=True)
        ]

    def decode(make_step: Callable[[], Any], onednn: bool, n_threads: int) -> Callable[[], float]:
        def measure() -> float:
            torch.set_num_threads(n_threads)
            with torch.inference_mode(), nullcontext() if onednn else _without_onednn(cpu):
                step = make_step()
                logits = step(prompt)
                t = time.perf_counter()
                for _ in range(MAX_COMPLETION - 1):
                    logits = step(logits.argmax(-1, keepdim=True))
                return (time.perf_counter() - t) / (MAX_COMPLETION - 1) * 1000

        return measure

    def generate() -> float:
        with torch.inference_mode():
            t = time.perf_counter()
            hf.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=MAX_COMPLETION,
                min_new_tokens=MAX_COMPLETION,  # always 32 tokens: no early EOS
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                pad_token_id=policy.tokenizer.pad_id,
            )
            return (time.perf_counter() - t) / MAX_COMPLETION * 1000

    def hf_step() -> Any:
        return policy.decoder(B)

    def lora_step() -> Any:
        return lora.decoder(B)

    def hf_cache_step() -> Any:
        """HF's own forward with a DynamicCache: what rollouts of other architectures run."""
        from transformers import DynamicCache

        cache = DynamicCache()
        return lambda ids: hf(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1]

    def gpt_step() -> Any:
        return gpt.decoder(B)[1]

    lora = add_lora(frozen_copy(policy), rank=16, alpha=32.0, dropout=0.0, targets=None)

    def lora_peft_step() -> Any:
        """Our LoRA rollouts before the adapters were folded: PEFT's forward, a DynamicCache."""
        from transformers import DynamicCache

        cache = DynamicCache()
        model = lora.model
        return lambda ids: model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1]

    decode_rows = interleaved(
        [
            ("Policy.decoder (our rollouts: plain path for GPT-2)", decode(hf_step, True, threads)),
            ("  same, oneDNN off", decode(hf_step, False, threads)),
            ("  same, 1 thread", decode(hf_step, True, 1)),
            ("  same, 1 thread, oneDNN off", decode(hf_step, False, 1)),
            ("Policy.decoder, LoRA r=16 (adapters folded in)", decode(lora_step, True, threads)),
            ("  LoRA r=16 through PEFT's forward (before)", decode(lora_peft_step, True, threads)),
            ("HF generate(), sampling (TRL's path; incl. prefill)", generate),
            (
                "HF forward + DynamicCache (the generic path)",
                decode(hf_cache_step, True, threads),
            ),
            ("  same, 1 thread", decode(hf_cache_step, True, 1)),
            ("our GPT decoder, same weights", decode(gpt_step, True, threads)),
            ("  same, oneDNN off (as GPT.generate runs it)", decode(gpt_step, False, threads)),
            ("  same, 1 thread", decode(gpt_step, True, 1)),
            ("  same, 1 thread, oneDNN off", decode(gpt_step, False, 1)),
        ],
        rounds=5,
    )
    with torch.inference_mode():
        ids = torch.randint(
            3, 49, (B, P + MAX_COMPLETION), generator=torch.Generator().manual_seed(1)
        )
        diff = (hf(input_ids=ids).logits - gpt(ids, all_logits=True)[0]).abs().max().item()
        # Our plain GPT-2 decode against HF's own cached forward, token by token.
        hf_dec, plain_dec = hf_cache_step(), policy.decoder(B)
        a, b = hf_dec(prompt), plain_dec(prompt)
        proto_diff = (a - b).abs().max().item()
        for _ in range(MAX_COMPLETION - 1):
            tok = a.argmax(-1, keepdim=True)
            a, b = hf_dec(tok), plain_dec(tok)
            proto_diff = max(proto_diff, (a - b).abs().max().item())
    gelu_note = (
        f"max |logit difference| over {MAX_COMPLETION} cached steps, Policy.decoder vs HF's "
        f"DynamicCache step: {proto_diff:.1e}; our GPT vs HF on the same weights (one full "
        f"forward): {diff:.1e} (our GPT uses the exact GELU, GPT-2 the tanh one)."
    )

    ids = torch.randint(3, 49, (B, P + MAX_COMPLETION), generator=torch.Generator().manual_seed(2))
    inputs, targets = ids[:, :-1], ids[:, 1:]

    def train_pass(
        logits_of: Callable[[Any], Any], module: Any, dropout: bool, n_threads: int
    ) -> Callable[[], float]:
        def measure() -> float:
            torch.set_num_threads(n_threads)
            module.train(dropout)  # eval mode: no dropout, gradients all the same
            t = time.perf_counter()
            logp = grpo_mod.token_logprobs(logits_of(inputs), targets)
            logp.sum().backward()
            module.zero_grad(set_to_none=True)
            elapsed = (time.perf_counter() - t) * 1000
            module.eval()
            return elapsed

        return measure

    def gpt_logits(x: Any) -> Any:
        return gpt(x, all_logits=True)[0]

    p = f"{cfg.resid_pdrop:g}"
    train_rows = interleaved(
        [
            (
                f"HF GPT-2 (policy.logits), dropout {p}",
                train_pass(policy.logits, hf, True, threads),
            ),
            ("  same, dropout off", train_pass(policy.logits, hf, False, threads)),
            (f"  same, dropout {p}, 1 thread", train_pass(policy.logits, hf, True, 1)),
            (f"our GPT, same weights, dropout {p}", train_pass(gpt_logits, gpt, True, threads)),
            ("  same, dropout off", train_pass(gpt_logits, gpt, False, threads)),
        ],
        rounds=5,
    )

    def adamw(**kwargs: Any) -> Callable[[], float]:
        params = [p.detach().clone().requires_grad_(True) for p in hf.parameters()]
        for q in params:
            q.grad = torch.randn_like(q)
        opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.999), weight_decay=0.0, **kwargs)

        def measure() -> float:
            t = time.perf_counter()
            opt.step()
            return (time.perf_counter() - t) * 1000

        return measure

    n_params = sum(q.numel() for q in hf.parameters())
    optim_rows = interleaved(
        [
            (f"AdamW, foreach (torch's default; ours), {n_params:,} params", adamw()),
            ("AdamW, fused=True (TRL's default, adamw_torch_fused)", adamw(fused=True)),
            ("AdamW, foreach=False", adamw(foreach=False)),
        ],
        rounds=20,
    )
    return {
        "decode_bench": [{"label": k, "ms_per_token": v} for k, v in decode_rows],
        "train_bench": [{"label": k, "ms": v} for k, v in train_rows],
        "optim_bench": [{"label": k, "ms": v} for k, v in optim_rows],
        "gelu_note": gelu_note,
    }


def cprofile_steps(one_step: Callable[[], Any], steps: int) -> list[list[Any]]:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        one_step()
    profiler.disable()
    stats = pstats.Stats(profiler)
    entries = []
    for (file, line, func), (_, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(file).name}:{line}({func})" if line else func
        entries.append([where, ncalls, tottime, cumtime])
    entries.sort(key=lambda e: e[2], reverse=True)
    return entries[:20]


CHILD_MODES: dict[str, Callable[[dict[str, Any]], None]] = {
    "setup": child_setup,
    "import": child_import,
    "trl-train": child_trl_train,
    "profile": child_profile,
}


# --------------------------------------------------------------------------- summary


class Summary:
    """The summary table: each figure with ours, TRL's, the ratio ours/TRL and a target."""

    def __init__(self) -> None:
        self.rows: list[list[str]] = []
        self.targets: dict[str, bool] = {}
        self.used_reference = False

    def add(
        self,
        figure: str,
        ours: float | None,
        trl: float | None,
        *,
        digits: int = 2,
        reference: bool = False,
        target: str = "",
        met: bool | None = None,
        show_ratio: bool = True,
    ) -> None:
        trl_text = fmt(trl, digits)
        if reference and trl is not None:
            trl_text += "*"
            self.used_reference = True
        r = ratio(ours, trl) if show_ratio else None
        if met is not None:
            self.targets[figure] = met
        self.rows.append(
            [
                figure,
                fmt(ours, digits),
                trl_text,
                fmt(r, 2, "x"),
                target,
                "" if met is None else ("PASS" if met else "MISS"),
            ]
        )

    def print(self) -> None:
        heading("Summary (medians over rounds)", load=True)
        say(table(["figure", "ours", "TRL", "ours/TRL", "target", "met?"], self.rows))
        if self.used_reference:
            say(
                "* the issue's TRL 1.16 figure for this machine class, not measured in this run "
                '(pip install "mlharness[bench]" to measure it here).'
            )


def summarise(
    summary: Summary, train: dict[str, Any] | None, imports: dict[str, Any] | None, with_trl: bool
) -> None:
    ours = [r for r in (train or {}).get("ours", []) if "error" not in r]
    trl = [r for r in (train or {}).get("trl", []) if "error" not in r]
    ref = not with_trl

    def theirs(key: str, issue_key: str | None = None) -> float | None:
        if with_trl:
            return across(trl, key)
        return ISSUE_REFERENCE.get(issue_key) if issue_key else None

    if train is not None:
        o_sps, t_sps = across(ours, "steps_per_sec"), theirs("steps_per_sec")
        if ref:
            t_sps = 1 / ISSUE_REFERENCE["s_per_step"]
        r = ratio(o_sps, t_sps)
        summary.add(
            "steps/s (median step)",
            o_sps,
            t_sps,
            reference=ref,
            target=f">= {MIN_STEPS_RATIO:g}x",
            met=None if r is None else r >= MIN_STEPS_RATIO,
        )
        summary.add(
            "s/step (median, after warm-up)",
            across(ours, "s_per_step"),
            theirs("s_per_step", "s_per_step"),
            digits=3,
            reference=ref,
        )
        summary.add(
            "s/step, 10th percentile",
            across(ours, "s_per_step_p10"),
            theirs("s_per_step_p10"),
            digits=3,
        )
        summary.add(
            "s/step by wall clock (with logging)",
            across(ours, "s_per_step_wall"),
            theirs("s_per_step_wall"),
            digits=3,
        )
        summary.add(
            "completion tokens/s",
            across(ours, "tokens_per_sec"),
            theirs("tokens_per_sec", "tokens_per_sec"),
            digits=0,
            reference=ref,
            target="report",
        )
        summary.add(
            "generation share of the step (%)",
            _pct(across(ours, "generation_share")),
            _pct(theirs("generation_share", "generation_share")),
            digits=0,
            reference=ref,
            show_ratio=False,
        )
        summary.add(
            "mean completion length (tokens)",
            across(ours, "mean_completion_len"),
            theirs("mean_completion_len"),
            digits=1,
            show_ratio=False,
        )
        summary.add(
            f"completions hitting {MAX_COMPLETION} tokens (%)",
            _pct(across(ours, "truncated_share")),
            _pct(theirs("truncated_share")),
            digits=0,
            show_ratio=False,
        )
        o_wall, t_wall = across(ours, "process_wall_s"), theirs("process_wall_s")
        r = ratio(o_wall, t_wall)
        summary.add(
            "process wall time (s)",
            o_wall,
            t_wall,
            digits=1,
            target=f"< {MAX_PROCESS_RATIO:g}x",
            met=None if r is None else r < MAX_PROCESS_RATIO,
        )
        summary.add(
            "  of which outside the steps (s)",
            across(ours, "outside_steps_s"),
            theirs("outside_steps_s"),
            digits=1,
        )
        summary.add("peak RSS (MB)", across(ours, "peak_rss_mb"), theirs("peak_rss_mb"), digits=0)
    if imports is not None and "error" not in imports:
        t_imp = median(imports["trl"]["seconds"]) if "trl" in imports else None
        summary.add(
            "import time: trainer module (s)",
            median(imports["ours"]["seconds"]),
            t_imp if with_trl else ISSUE_REFERENCE["import_s"],
            reference=ref,
            target="report",
        )
        summary.add(
            "  ours with transformers (HF policy)",
            median(imports["ours_hf"]["seconds"]),
            t_imp if with_trl else ISSUE_REFERENCE["import_s"],
            reference=ref,
        )
        summary.add("  import torch alone (s)", median(imports["torch"]["seconds"]), None)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark mlharness's GRPO trainer against TRL's GRPOTrainer on one tiny "
        "random GPT-2: seconds per step, tokens/s, generation share, memory, import and "
        "process time; then profile our step.",
    )
    parser.add_argument("--steps", type=int, default=30, help="GRPO steps per run (default 30)")
    parser.add_argument(
        "--threads", type=int, default=2, help="torch CPU threads, both sides (default 2)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="training rounds, TRL then ours in each (default 1); medians over rounds",
    )
    parser.add_argument(
        "--import-repeats", type=int, default=3, help="fresh-interpreter imports each (default 3)"
    )
    parser.add_argument(
        "--profile-steps", type=int, default=10, help="timed steps in the profile (default 10)"
    )
    parser.add_argument(
        "--cprofile", action="store_true", help="profile: also list the top functions (cProfile)"
    )
    parser.add_argument(
        "--skip-trl", action="store_true", help="measure only our side (as when TRL is missing)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    add_common_options(parser, SECTIONS)
    args = parser.parse_args(argv)
    for name in ("steps", "threads", "repeats", "import_repeats", "profile_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.steps <= WARMUP_STEPS:
        parser.error(f"--steps must be more than the {WARMUP_STEPS} warm-up step(s)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if run_child_mode(args, CHILD_MODES):
        return 0
    sections = args.only or list(SECTIONS)
    with_trl = not args.skip_trl and importlib.util.find_spec("trl") is not None
    started = time.perf_counter()
    machine = print_header("mlharness GRPO benchmark against TRL's GRPOTrainer", versions())
    if not with_trl:
        say(TRL_MISSING if not args.skip_trl else "--skip-trl: only our side runs.")
    work = Path(tempfile.mkdtemp(prefix="mlx-grpo-bench-"))
    say(f"scratch directory: {work}")
    figures: dict[str, Any] = {
        **machine,
        "settings": {
            "steps": args.steps,
            "threads": args.threads,
            "repeats": args.repeats,
            "model": MODEL_SHAPE,
            "vocab": 49,
            "group_size": GROUP_SIZE,
            "prompts_per_step": PROMPTS_PER_STEP,
            "max_completion": MAX_COMPLETION,
            "learning_rate": LEARNING_RATE,
            "warmup_steps_ignored": WARMUP_STEPS,
        },
        "trl_measured": with_trl,
        "issue_reference": ISSUE_REFERENCE,
        "sections": {},
    }
    done: dict[str, Any] = figures["sections"]
    summary = Summary()
    try:
        problem = setup(work, args.threads)
        if problem:
            say(problem["error"])
            return 1
        if "import" in sections:
            done["import"] = section_import(work, args.threads, args.import_repeats, with_trl)
            save_json(args.json, figures)
        if "train" in sections:
            done["train"] = section_train(work, args.steps, args.threads, args.repeats, with_trl)
            save_json(args.json, figures)
        if "profile" in sections:
            trl_runs = done.get("train", {}).get("trl", [])
            done["profile"] = section_profile(
                work, args.steps, args.threads, args.profile_steps, args.cprofile, trl_runs
            )
            if "error" in done["profile"]:
                say(done["profile"]["error"])
    finally:
        if args.keep:
            say(f"\nscratch directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    summarise(summary, done.get("train"), done.get("import"), with_trl)
    if summary.rows:
        summary.print()
    figures["targets"] = summary.targets
    finish(figures, started, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
