"""Benchmark the ``lm`` engine against nanoGPT, side by side on this machine.

Run it from the repository root with the project's virtual environment::

    .venv/bin/python bench/lm.py --nanogpt /tmp/nanogpt          # everything, ~7 minutes
    .venv/bin/python bench/lm.py                                  # our side only
    .venv/bin/python bench/lm.py --only sample,prepare            # the quick sections
    .venv/bin/python bench/lm.py --nanogpt /tmp/nanogpt --json lm.json
    .venv/bin/python bench/lm.py --nanogpt /tmp/nanogpt --skip-ours     # nanoGPT only

``--nanogpt`` takes a work tree of https://github.com/karpathy/nanoGPT (a directory holding
``train.py`` and ``model.py``). A bare git directory is refused; materialise one with::

    mkdir -p /tmp/nanogpt
    git --git-dir=PATH/TO/nanoGPT.git --work-tree=/tmp/nanogpt checkout -f HEAD -- .

Without ``--nanogpt`` the nanoGPT column shows the issue's reference figures for this
machine class, marked with ``*``: they were not measured in this run.

Sections (``--only``, comma-separated):

``prepare``
    Tiny Shakespeare (``../shared/data/tinyshakespeare.txt``, copied to nanoGPT's
    ``input.txt`` when missing so it works offline) through nanoGPT's
    ``data/shakespeare_char/prepare.py`` (char) and ``data/shakespeare/prepare.py``
    (tiktoken GPT-2), and through our ``prepare_data`` with the ``char``, ``tiktoken:gpt2``
    and ``bpe`` tokenizers. Each runs in its own process: one warm-up, then the median of
    ``--prepare-repeats`` timed calls, the imports done before the clock starts so
    interpreter and library start-up are not counted on either side. MB/s = input bytes
    (10^6) per second. tiktoken needs the GPT-2 encoding file, which it downloads; offline
    it is reported as skipped (set ``TIKTOKEN_CACHE_DIR`` to a directory holding it;
    ``bench/tiktoken_gpt2.py DIR`` fills one from PyPI).
``train``
    nanoGPT's README CPU recipe (``config/train_shakespeare_char.py`` with ``--device=cpu
    --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12
    --n_layer=4 --n_head=4 --n_embd=128 --dropout=0.0``, ``--max_iters`` and
    ``--lr_decay_iters`` = ``--iters``) and our trainer with the same hyperparameters.
    Speed is the median per-iteration time of iterations >= 10 (nanoGPT's ``iter N: ...
    time Yms`` lines, 0-based; our ``step_time_ms`` records, whose ``iter`` counts steps
    done); tokens/s = 12 * 64 / that. The median ignores the few iterations that also
    paid for an evaluation; its 10th percentile (JSON, and the detail line) shows the
    speed when nothing else ran. "tokens/s by wall clock" counts everything between the
    first evaluation after step 0 and the last, both sides alike. Val loss is that of the
    last evaluation (at ``--iters``). "Time to val <= 1.886" is wall time from the process
    start to the moment the first evaluation at or below it was known: nanoGPT's stdout
    lines are timestamped as they arrive (unbuffered), our ``metrics.ndjson`` is tailed
    as it is written (falling back to its ``elapsed_s`` if it were written in bulk). Peak
    RSS is the larger of (a) the summed RSS of the process tree polled every 50 ms and
    (b) the child's ``ru_maxrss`` from ``wait4``.
``compile``
    The recipe with ``torch.compile`` on both sides, 300 iterations, each side with an
    empty inductor cache of its own so the compile is timed as on a new machine: tokens/s
    of the median step and the first step's time (the compile; nanoGPT's also runs its
    step-0 evaluation). The issue gives nanoGPT 19,000 tokens/s after a 33 s compile.
``fast``
    Our shipped CPU config ``experiments/shakespeare_char_cpu_fast.toml`` (skipped when
    absent): time from process start to val loss <= 1.886, against nanoGPT's time to the
    same loss in the ``train`` section (or the issue's 102 s when not measured).
``sample``
    nanoGPT's ``GPT.generate`` and ours (``use_cache=True`` and ``False``) on the same
    random model (4 layers, 4 heads, 128 wide, block 64, vocab 65, ``torch.manual_seed(0)``),
    500 new tokens from a 1-token prompt, temperature 1, no top-k: one warm-up, then the
    median of 3. Speed does not depend on the weights.
``gpt2vocab``
    The recipe's model and batch on tiny Shakespeare in GPT-2 BPE tokens (our
    ``experiments/shakespeare_cpu.toml`` with the recipe's settings; nanoGPT's
    ``data/shakespeare`` with ``--dataset=shakespeare --gradient_accumulation_steps=1``),
    40 iterations each: the median step when a step's largest tensors are its logits
    (50,257 per position; nanoGPT pads to 50,304). Ours runs twice, as shipped and with
    ``THP_MEM_ALLOC_ENABLE=0`` (no huge pages). Needs tiktoken's GPT-2 encoding, like
    ``prepare``; skipped without it.

Every heavy step runs in a fresh child process of this same interpreter, one at a time,
so memory and speed are measured alike for both sides. The machine has few cores: close
other heavy work first, and read the load average printed at the top and bottom.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from report import (  # bench/ is on sys.path when a script runs
    RESULT_MARKER,
    ChildRun,
    add_common_options,
    child_env,
    emit,
    finish,
    fmt,
    heading,
    ratio,
    run_child,
    run_child_mode,
    save_json,
    say,
    table,
    versions,
)
from report import self_command as run_self

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TEXT = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
FAST_CONFIG = REPO / "experiments" / "shakespeare_char_cpu_fast.toml"
GPT2_VOCAB_CONFIG = REPO / "experiments" / "shakespeare_cpu.toml"
SECTIONS = ("prepare", "train", "compile", "fast", "sample", "gpt2vocab")

BUSY_LOAD_PER_CPU = 0.5  # 1-minute load average per CPU above which we warn
SKIP_FIRST_ITERS = 10  # iterations left out of the median step time (warm-up)
LIVE_RECORD_SECONDS = 0.5  # metrics records seen within this are being written live

# The recipe both sides train with: nanoGPT's config/train_shakespeare_char.py plus its
# README's CPU overrides. nanoGPT's own defaults cover the rest (weight_decay 0.1,
# grad_clip 1.0, beta1 0.9, bias False), stated here for our side.
BATCH_SIZE = 12
BLOCK_SIZE = 64
MODEL_SHAPE: dict[str, Any] = {
    "n_layer": 4,
    "n_head": 4,
    "n_embd": 128,
    "block_size": BLOCK_SIZE,
    "dropout": 0.0,
    "bias": False,
}
TRAIN_RECIPE: dict[str, Any] = {
    "batch_size": BATCH_SIZE,
    "grad_accum_steps": 1,
    "learning_rate": 1e-3,
    "min_lr": 1e-4,
    "warmup_iters": 100,
    "beta1": 0.9,
    "beta2": 0.99,
    "weight_decay": 0.1,
    "grad_clip": 1.0,
    "eval_interval": 250,
    "eval_iters": 20,
    "log_interval": 1,
    "device": "cpu",
    "dtype": "float32",
    "compile": False,
    "seed": 1337,
}
NANOGPT_RECIPE_ARGS = (
    "config/train_shakespeare_char.py",
    "--device=cpu",
    "--compile=False",
    "--eval_iters=20",
    "--log_interval=1",
    f"--block_size={BLOCK_SIZE}",
    f"--batch_size={BATCH_SIZE}",
    "--n_layer=4",
    "--n_head=4",
    "--n_embd=128",
    "--dropout=0.0",
)
VOCAB_SIZE = 65  # tiny Shakespeare's characters
GPT2_VOCAB_ITERS = 40  # enough for a steady median step of a ~0.4 s step
COMPILE_ITERS = 300  # after the compile, enough for a steady median step
SAMPLE_NEW_TOKENS = 500
SAMPLE_REPEATS = 3

# Targets (from the lm issue), printed next to the results.
TARGET_VAL_LOSS = 1.886
MIN_TRAIN_SPEED_RATIO = 1.2
MAX_FAST_TIME_RATIO = 0.6
MIN_KV_SAMPLE_RATIO = 5.0
MAX_RSS_RATIO = 1.0

# nanoGPT's figures on this machine class from the issue (torch 2.13.0 CPU, the recipe
# above, 2000 iterations). Shown, marked "*", only when --nanogpt is not given.
ISSUE_REFERENCE: dict[str, float] = {
    "ms_per_iter": 44.6,
    "tokens_per_sec": 17_200.0,
    "final_val_loss": 1.886,
    "seconds_to_target": 102.0,
    "peak_rss_mb": 374.0,
    "sample_tokens_per_sec": 453.0,
    "compiled_tokens_per_sec": 19_000.0,
    "first_step_seconds": 33.0,  # its torch.compile time
}

NANOGPT_ITER_LINE = re.compile(
    r"^iter (\d+): loss ([-+\d.eE]+|nan|inf), time ([\d.]+)ms, mfu (-?[\d.]+)%"
)
NANOGPT_EVAL_LINE = re.compile(r"^step (\d+): train loss ([\d.]+|nan), val loss ([\d.]+|nan)")
NANOGPT_TRAIN_START = "using fused AdamW"  # its last line before the training loop
RUN_DIR_MARKER = "LMBENCH_RUN_DIR="


# --------------------------------------------------------------------------- helpers


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def section_heading(title: str) -> None:
    heading(title, load=True)


def machine_facts() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        **versions(("torch", "numpy", "tiktoken", "tokenizers")),
        "thread_env": {
            k: os.environ[k]
            for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TIKTOKEN_CACHE_DIR")
            if k in os.environ
        },
    }


def print_machine(facts: dict[str, Any]) -> None:
    heading("Machine")
    say(f"python {facts['python']} on {facts['platform']} ({facts['processor']})")
    say(f"torch {facts['torch']}, numpy {facts['numpy']}, CPUs: {facts['cpu_count']}")
    say(f"load average (1/5/15 min): {' / '.join(map(str, facts['load_average_1_5_15']))}")
    if facts["load_average_1_5_15"][0] > BUSY_LOAD_PER_CPU * (facts["cpu_count"] or 1):
        say(
            "Warning: other processes are using the CPUs. torch's threads slow down badly "
            "when the cores are oversubscribed, so times (and ratios) will be noisy."
        )
    if facts["thread_env"]:
        say(f"environment: {facts['thread_env']}")


# --------------------------------------------------------------------------- child runs


def self_command(kind: str, spec: dict[str, Any]) -> list[str]:
    """This script re-run in one of its internal ``--_child`` modes."""
    return run_self(__file__, kind, spec)


# --------------------------------------------------------------------------- nanoGPT side


def check_nanogpt(path: Path) -> str | None:
    """Why ``path`` cannot be used as a nanoGPT work tree, or None when it can."""
    if not path.is_dir():
        return f"--nanogpt {path}: no such directory."
    if (path / "train.py").is_file() and (path / "model.py").is_file():
        return None
    if (path / "HEAD").is_file() and (path / "objects").is_dir():
        return (
            f"--nanogpt {path} is a bare git directory, not a work tree. Materialise one "
            f"outside the project:\n  mkdir -p /tmp/nanogpt && git --git-dir={path} "
            "--work-tree=/tmp/nanogpt checkout -f HEAD -- .\nthen pass --nanogpt /tmp/nanogpt."
        )
    return f"--nanogpt {path} holds no train.py and model.py: is it a nanoGPT checkout?"


def nanogpt_prepare(root: Path, dataset: str, repeats: int) -> dict[str, Any]:
    """Time nanoGPT's ``data/<dataset>/prepare.py`` (imports excluded) in a child."""
    data_dir = root / "data" / dataset
    input_txt = data_dir / "input.txt"
    if not input_txt.exists():
        shutil.copyfile(TEXT, input_txt)
    run = run_child(
        self_command(
            "nanogpt-prepare", {"script": str(data_dir / "prepare.py"), "repeats": repeats}
        ),
        cwd=root,
    )
    if not run.ok:
        offline = any(
            "ConnectionError" in line or "Max retries" in line or "Temporary failure" in line
            for _, line in run.lines
        )
        if offline and dataset == "shakespeare":
            return {"skipped": "offline: tiktoken could not download the GPT-2 encoding"}
        return {"error": f"prepare.py failed (exit {run.returncode}):\n{run.tail()}"}
    result = run.result()
    result["input_bytes"] = input_txt.stat().st_size
    result["mb_per_sec"] = result["input_bytes"] / 1e6 / median(result["seconds"])
    result["process_wall_seconds"] = run.wall_seconds
    return result


def nanogpt_train(root: Path, iters: int, work: Path) -> dict[str, Any]:
    out_dir = work / "nanogpt-out"
    result = run_nanogpt_train(
        root,
        [
            *NANOGPT_RECIPE_ARGS,
            f"--max_iters={iters}",
            f"--lr_decay_iters={iters}",
            f"--out_dir={out_dir}",
            "--always_save_checkpoint=True",
        ],
    )
    if not status(result):
        result["checkpoint"] = str(out_dir / "ckpt.pt")
    return result


def nanogpt_train_gpt2_vocab(root: Path, work: Path) -> dict[str, Any]:
    """The recipe's model on nanoGPT's ``data/shakespeare`` (GPT-2 BPE), a short run."""
    if not (root / "data" / "shakespeare" / "train.bin").exists():
        prepared = nanogpt_prepare(root, "shakespeare", 1)
        if status(prepared):
            return prepared
    n = GPT2_VOCAB_ITERS
    return run_nanogpt_train(
        root,
        [
            *[a for a in NANOGPT_RECIPE_ARGS if not a.endswith(".py") and "eval_iters" not in a],
            "--dataset=shakespeare",
            "--gradient_accumulation_steps=1",
            "--learning_rate=1e-3",
            "--min_lr=1e-4",
            "--beta2=0.99",
            f"--max_iters={n}",
            f"--lr_decay_iters={n}",
            f"--eval_interval={n}",
            "--eval_iters=2",
            f"--out_dir={work / 'nanogpt-gpt2-vocab'}",
        ],
    )


def nanogpt_train_compiled(root: Path, work: Path) -> dict[str, Any]:
    """The recipe with ``--compile=True``, a short run (evaluating at 0 and at the end)."""
    n = COMPILE_ITERS
    return run_nanogpt_train(
        root,
        [
            *[a for a in NANOGPT_RECIPE_ARGS if not a.startswith("--compile")],
            "--compile=True",
            f"--max_iters={n}",
            f"--lr_decay_iters={n}",
            f"--eval_interval={n}",
            f"--out_dir={work / 'nanogpt-compiled'}",
        ],
        env=cold_compile_cache(work, "nanogpt"),
    )


def cold_compile_cache(work: Path, side: str) -> dict[str, str]:
    """A fresh, empty inductor cache for one side: its compile is timed from scratch, as
    on a new machine, not read back from an earlier run's cache in /tmp."""
    return {"TORCHINDUCTOR_CACHE_DIR": str(work / f"inductor-cache-{side}")}


def run_nanogpt_train(
    root: Path, args: Sequence[str], env: dict[str, str] | None = None
) -> dict[str, Any]:
    """nanoGPT's ``train.py`` with ``args`` in a monitored child, its log summarised.

    ``env``: more environment variables for the child.
    """
    cmd = [PYTHON, "-u", "train.py", *args]
    say("  " + " ".join(["python", *cmd[1:]]))
    run = run_child(
        cmd,
        cwd=root,
        env=child_env(**(env or {})),
        echo=lambda line: bool(NANOGPT_EVAL_LINE.match(line)),
    )
    if not run.ok:
        return {"error": f"train.py failed (exit {run.returncode}):\n{run.tail()}"}
    step_ms: dict[int, float] = {}
    evals: list[dict[str, Any]] = []
    train_start: float | None = None
    for t, line in run.lines:
        if train_start is None and line.startswith(NANOGPT_TRAIN_START):
            train_start = t
        if m := NANOGPT_ITER_LINE.match(line):
            step_ms[int(m.group(1))] = float(m.group(3))
        elif m := NANOGPT_EVAL_LINE.match(line):
            evals.append({"iter": int(m.group(1)), "val_loss": float(m.group(3)), "at_seconds": t})
    result = summarise_training(step_ms, evals, run)
    result["command"] = " ".join(["python", *cmd[1:]])
    result["training_started_at_seconds"] = train_start
    return result


def summarise_training(
    step_ms: dict[int, float], evals: list[dict[str, Any]], run: ChildRun
) -> dict[str, Any]:
    """Median step time, tokens/s, final val loss, time to target and memory of one run."""
    timed = [ms for it, ms in step_ms.items() if it >= SKIP_FIRST_ITERS]
    ms_per_iter = median(timed) if timed else None
    reached = next((e for e in evals if e["val_loss"] <= TARGET_VAL_LOSS), None)
    last = max(evals, key=lambda e: e["iter"]) if evals else None
    return {
        "wall_tokens_per_sec": wall_throughput(evals),
        "iterations_logged": len(step_ms),
        "ms_per_iter": ms_per_iter,
        # Under load the median drifts up; the 10th percentile shows the unhindered speed.
        "ms_per_iter_p10": statistics.quantiles(timed, n=10)[0] if len(timed) > 1 else None,
        "first_step_seconds": step_ms[0] / 1000 if 0 in step_ms else None,
        "tokens_per_sec": BATCH_SIZE * BLOCK_SIZE * 1000 / ms_per_iter if ms_per_iter else None,
        "evals": evals,
        "final_iter": last["iter"] if last else None,
        "final_val_loss": last["val_loss"] if last else None,
        "seconds_to_target": reached["at_seconds"] if reached else None,
        "iter_at_target": reached["iter"] if reached else None,
        "process_wall_seconds": run.wall_seconds,
        "peak_rss_mb": run.peak_rss_mb,
        "peak_rss_polled_mb": run.peak_rss_polled / 1e6,
        "peak_rss_rusage_mb": run.peak_rss_rusage / 1e6,
    }


def wall_throughput(evals: list[dict[str, Any]]) -> float | None:
    """Tokens/s by the wall clock between the first evaluation after step 0 and the last.

    Every step, evaluation, checkpoint and log line in between is counted, on both sides
    alike (each interval is eval_interval steps plus one evaluation), so this checks the
    per-step median against everything else a training loop does.
    """
    timed = sorted(
        (e for e in evals if e["iter"] > 0 and e.get("at_seconds") is not None),
        key=lambda e: e["iter"],
    )
    if len(timed) < 2 or timed[-1]["at_seconds"] <= timed[0]["at_seconds"]:
        return None
    steps = int(timed[-1]["iter"]) - int(timed[0]["iter"])
    seconds = float(timed[-1]["at_seconds"]) - float(timed[0]["at_seconds"])
    return BATCH_SIZE * BLOCK_SIZE * steps / seconds


def nanogpt_sample(root: Path) -> dict[str, Any]:
    run = run_child(self_command("nanogpt-sample", {"root": str(root)}), cwd=root)
    if not run.ok:
        return {"error": f"nanoGPT sampling failed (exit {run.returncode}):\n{run.tail()}"}
    return run.result()


def whole_val(
    work: Path, nanogpt: Path | None, ours: dict[str, Any], theirs: dict[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """Both final models' loss over the whole val split (see :func:`whole_split_loss`).

    Both are scored on the same windows: our split, the last 10% of the tokens, is nanoGPT's
    (the last 10% of the characters) less its first token, so it is used for both sides.
    """
    out: dict[str, dict[str, Any]] = {}
    val = work / "data" / "shakespeare_char" / "val.bin"
    if not status(ours):
        run = our_child(
            "whole-val", {"side": "ours", "run_dir": ours["run_dir"], "val": str(val)}, work
        )
        out["ours"] = run.result() if run.ok else {"error": run.tail()}
    if nanogpt is not None and theirs is not None and not status(theirs):
        if not Path(theirs["checkpoint"]).exists():  # it saves only at evaluations after step 0
            out["nanogpt"] = {"skipped": "nanoGPT saved no checkpoint after step 0"}
            return out
        their_val = nanogpt / "data" / "shakespeare_char" / "val.bin"
        if not val.exists():
            val = their_val  # our side was skipped
        elif not their_val.read_bytes().endswith(val.read_bytes()):
            say("  note: our val split is not the end of nanoGPT's; each side scores its own.")
            val = their_val
        spec = {"side": "nanogpt", "root": str(nanogpt), "checkpoint": theirs["checkpoint"]}
        run = run_child(self_command("whole-val", {**spec, "val": str(val)}), cwd=nanogpt)
        out["nanogpt"] = run.result() if run.ok else {"error": run.tail()}
    return out


# --------------------------------------------------------------------------- our side


def our_overrides(work: Path, data_name: str, prepare: dict[str, Any]) -> dict[str, Any]:
    return {
        "prepare": {"input": str(TEXT), "data_dir": str(work / "data" / data_name), **prepare},
        "output": {"directory": str(work / "runs")},
    }


def recipe_overrides(work: Path, data_name: str, **train: Any) -> dict[str, Any]:
    """Our side of nanoGPT's recipe (its model and training settings), ``train`` on top."""
    overrides = our_overrides(work, data_name, {})
    overrides["model"] = dict(MODEL_SHAPE)
    overrides["train"] = {**TRAIN_RECIPE, **train}
    return overrides


def speed_summary(res: dict[str, Any]) -> str:
    """A training run's median step, its 10th percentile and tokens/s, for a detail line."""
    return (
        f"{fmt(res['ms_per_iter'], 2)} ms/iter "
        f"(10th percentile {fmt(res['ms_per_iter_p10'], 2)}), "
        f"{fmt(res['tokens_per_sec'], 0)} tokens/s"
    )


def our_child(
    kind: str, spec: dict[str, Any], work: Path, env: dict[str, str] | None = None, **kwargs: Any
) -> ChildRun:
    """Run one of our ``--_child`` modes with the workspace set to the scratch directory.

    Runs must stay inside the workspace, so it is pointed at ``work``: nothing is written
    into the repository. ``env``: more environment variables for the child.
    """
    return run_child(
        self_command(kind, spec),
        cwd=REPO,
        env=child_env(MLX_WORKSPACE=str(work), **(env or {})),
        **kwargs,
    )


def our_prepare(
    work: Path, experiment: str, prepare: dict[str, Any], label: str, repeats: int
) -> dict[str, Any]:
    spec = {
        "config": None,
        "experiment": experiment,
        "overrides": our_overrides(work, f"prepare-{label}", prepare),
        "repeats": repeats,
    }
    run = our_child("our-prepare", spec, work)
    if not run.ok:
        return {"error": f"prepare_data failed (exit {run.returncode}):\n{run.tail()}"}
    result = run.result()
    if "seconds" in result:
        result["input_bytes"] = TEXT.stat().st_size
        result["mb_per_sec"] = result["input_bytes"] / 1e6 / median(result["seconds"])
        result["process_wall_seconds"] = run.wall_seconds
    return result


def our_train(
    work: Path,
    config: Path | None,
    overrides: dict[str, Any],
    label: str,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Prepare the data (own child, untimed) then train in a monitored child."""
    runs_dir = work / "runs" / label
    overrides = {**overrides, "output": {"directory": str(runs_dir)}}
    spec = {
        "config": str(config) if config else None,
        # A config file names its experiment (shakespeare_char for ours); passing the name
        # too would make the loader refuse a file that names it differently.
        "experiment": None if config else "shakespeare_char",
        "overrides": overrides,
    }
    prep = our_child("our-prepare", {**spec, "repeats": 0}, work)
    if not prep.ok:
        return {"error": f"preparing the data failed (exit {prep.returncode}):\n{prep.tail()}"}
    prepared = prep.result()
    if "unavailable" in prepared or "skipped" in prepared:
        return prepared
    run = our_child("our-train", spec, work, env, tail_dir=runs_dir, on_record=print_eval_record)
    if not run.ok:
        return {"error": f"training failed (exit {run.returncode}):\n{run.tail()}"}
    unavailable = run.marker(RESULT_MARKER)
    if unavailable is not None and "unavailable" in json.loads(unavailable):
        return dict(json.loads(unavailable))
    run_dir = run.marker(RUN_DIR_MARKER)
    if run_dir is None:
        return {"error": f"the training child printed no run directory:\n{run.tail()}"}
    metrics = Path(run_dir) / "metrics" / "metrics.ndjson"
    if not metrics.exists():
        return {"error": f"{metrics} was not written."}
    records = [json.loads(s) for s in metrics.read_text().splitlines() if s.strip()]
    # Where each record falls on the process clock: the tailer saw it at t_seen, and it
    # was written elapsed_s after the trainer's own start, so that start is at
    # min(t_seen - elapsed_s) (the record seen soonest after it was written).
    offsets = [t - float(r["elapsed_s"]) for t, r in run.records if "elapsed_s" in r]
    start: float | None = min(offsets) if offsets else None
    # nanoGPT's "step N:" line is stamped when printed, after its evaluation; our eval
    # record's elapsed_s is taken before the evaluation. So an evaluation's time is when
    # the tailer saw its record, provided the file is written line by line (the step
    # records were seen promptly); otherwise elapsed_s on the process clock.
    lags = [
        t - start - float(r["elapsed_s"])
        for t, r in run.records
        if start is not None and "step_time_ms" in r
    ]
    live = bool(lags) and median(lags) < LIVE_RECORD_SECONDS
    seen = {int(r["iter"]): t for t, r in run.records if r.get("val_loss") is not None}

    def eval_time(r: dict[str, Any]) -> float | None:
        if live and int(r["iter"]) in seen:
            return seen[int(r["iter"])]
        if start is None or r.get("elapsed_s") is None:
            return None
        return start + float(r["elapsed_s"])

    # Our records count steps done (1 after the first step); nanoGPT numbers steps from 0.
    step_ms = {int(r["iter"]) - 1: float(r["step_time_ms"]) for r in records if "step_time_ms" in r}
    evals = [
        {
            "iter": int(r["iter"]),
            "val_loss": float(r["val_loss"]),
            "elapsed_s": r.get("elapsed_s"),
            "at_seconds": eval_time(r),
        }
        for r in records
        if r.get("val_loss") is not None
    ]
    result = summarise_training(step_ms, evals, run)
    result["run_dir"] = run_dir
    result["training_started_at_seconds"] = start
    result["eval_times_from"] = "tailed records" if live else "elapsed_s"
    reached = next((e for e in evals if e["val_loss"] <= TARGET_VAL_LOSS), None)
    result["train_clock_seconds_to_target"] = reached["elapsed_s"] if reached else None
    if result["seconds_to_target"] is None and reached is not None:
        result["note"] = "no metrics record was seen while training ran; no process clock"
    return result


def print_eval_record(seconds: float, record: dict[str, Any]) -> None:
    if record.get("val_loss") is not None:
        say(
            f"    iter {record.get('iter')}: val loss {record['val_loss']:.4f} "
            f"(seen at {seconds:.1f} s)"
        )


def our_sample(work: Path) -> dict[str, Any]:
    run = our_child("our-sample", {}, work)
    if not run.ok:
        return {"error": f"our sampling failed (exit {run.returncode}):\n{run.tail()}"}
    return run.result()


# --------------------------------------------------------------------------- child modes


def time_generate(generate: Callable[[], Any]) -> list[float]:
    """One warm-up call, then SAMPLE_REPEATS timed ones; tokens/s of each."""
    generate()
    speeds = []
    for _ in range(SAMPLE_REPEATS):
        start = time.perf_counter()
        generate()
        speeds.append(SAMPLE_NEW_TOKENS / (time.perf_counter() - start))
    return speeds


def child_nanogpt_sample(spec: dict[str, Any]) -> None:
    import torch

    sys.path.insert(0, spec["root"])
    from model import GPT, GPTConfig  # nanoGPT's model.py

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB_SIZE, **MODEL_SHAPE))
    model.eval()
    idx = torch.zeros((1, 1), dtype=torch.long)
    speeds = time_generate(
        lambda: model.generate(idx, SAMPLE_NEW_TOKENS, temperature=1.0, top_k=None)
    )
    emit({"tokens_per_sec": median(speeds), "repeats": speeds, "threads": torch.get_num_threads()})


def child_our_sample(spec: dict[str, Any]) -> None:
    import torch

    try:
        from mlharness.lm.model import GPT, GPTConfig
    except ImportError as exc:
        emit({"unavailable": f"mlharness.lm.model: {exc}"})
        return
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB_SIZE, **MODEL_SHAPE))
    model.eval()
    idx = torch.zeros((1, 1), dtype=torch.long)
    result: dict[str, Any] = {"threads": torch.get_num_threads()}
    for name, use_cache in (("cache", True), ("no_cache", False)):

        def generate(use_cache: bool = use_cache) -> Any:
            return model.generate(
                idx, SAMPLE_NEW_TOKENS, temperature=1.0, top_k=None, use_cache=use_cache
            )

        speeds = time_generate(generate)
        result[name] = {"tokens_per_sec": median(speeds), "repeats": speeds}
    emit(result)


def whole_split_loss(
    loss: Callable[[Any, Any], Any], data: Any, block_size: int, batch_size: int = 64
) -> float:
    """Mean cross-entropy over every non-overlapping ``block_size`` window of ``data``.

    Why: the logged val loss is each side's estimate from 20 random batches (eval_iters=20,
    the recipe's), which the seed moves by 0.01-0.02. Every window of the split, the same
    windows for both sides, gives the exact figure the two models can be compared on.
    ``loss(x, y)`` returns a batch's mean loss.
    """
    import numpy as np
    import torch

    windows = (len(data) - 1) // block_size
    offsets = np.arange(block_size + 1)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for first in range(0, windows, batch_size):
            starts = np.arange(first, min(first + batch_size, windows)) * block_size
            t = torch.from_numpy(data[starts[:, None] + offsets].astype(np.int64))
            x, y = t[:, :-1].contiguous(), t[:, 1:].contiguous()
            total += float(loss(x, y)) * y.numel()
            tokens += y.numel()
    return total / tokens


def child_whole_val(spec: dict[str, Any]) -> None:
    """One side's final model (``spec["side"]``) scored by :func:`whole_split_loss`."""
    import numpy as np
    import torch

    data = np.memmap(spec["val"], dtype=np.uint16, mode="r")
    if spec["side"] == "nanogpt":
        sys.path.insert(0, spec["root"])
        from model import GPT, GPTConfig  # nanoGPT's model.py

        ckpt = torch.load(spec["checkpoint"], map_location="cpu", weights_only=False)
        model = GPT(GPTConfig(**ckpt["model_args"]))
        model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
        iteration = int(ckpt["iter_num"])
    else:
        from mlharness.lm.sampler import load_model
        from mlharness.runs import checkpoints as run_ckpt

        last = run_ckpt.list_checkpoints(Path(spec["run_dir"]) / "checkpoints", "last")[-1]
        model, _ = load_model(last.path, torch.device("cpu"), use_ema=False)
        iteration = last.iter
    model.eval()
    block_size = model.config.block_size
    emit(
        {
            "val_loss": whole_split_loss(lambda x, y: model(x, y)[1], data, block_size),
            "iter": iteration,
            "val_tokens": len(data),
        }
    )


def child_nanogpt_prepare(spec: dict[str, Any]) -> None:
    import pickle  # noqa: F401  (imported by the script; loaded before the clock starts)
    import runpy

    import numpy  # noqa: F401
    import requests  # noqa: F401

    with contextlib.suppress(ImportError):
        import tiktoken  # noqa: F401
    script = spec["script"]
    seconds = []
    for i in range(spec["repeats"] + 1):  # the first is the warm-up
        start = time.perf_counter()
        runpy.run_path(script, run_name="__main__")
        if i:
            seconds.append(time.perf_counter() - start)
    emit({"seconds": seconds})


def load_our_config(spec: dict[str, Any]) -> Any:
    from mlharness.lm.config import load_lm_config

    return load_lm_config(spec["config"], spec["experiment"], overrides=spec["overrides"])


def child_our_prepare(spec: dict[str, Any]) -> None:
    from mlharness.errors import DatasetError

    try:
        from mlharness.lm.prepare import prepare_data
    except ImportError as exc:
        emit({"unavailable": f"mlharness.lm.prepare: {exc}"})
        return
    config = load_our_config(spec)
    input_path = Path(spec["overrides"]["prepare"]["input"])
    seconds: list[float] = []
    report_seconds: list[float] = []
    report: Any = None
    for i in range(spec["repeats"] + 1):  # the first is the warm-up (or the only run)
        start = time.perf_counter()
        try:
            report = prepare_data(config, input_path, force=True, progress=False)
        except DatasetError as exc:
            if config.prepare.tokenizer.startswith("tiktoken:"):
                emit({"skipped": "offline, set TIKTOKEN_CACHE_DIR", "message": str(exc)})
                return
            raise
        if i:
            seconds.append(time.perf_counter() - start)
            report_seconds.append(float(report.seconds))
    emit(
        {
            "seconds": seconds,
            "report_seconds": report_seconds,
            "train_tokens": report.train_tokens,
            "val_tokens": report.val_tokens,
            "tokenizer": config.prepare.tokenizer,
        }
    )


def child_our_train(spec: dict[str, Any]) -> None:
    try:
        from mlharness.lm.runner import train  # what `mlx train` runs
    except ImportError as exc:
        emit({"unavailable": f"mlharness.lm.runner: {exc}"})
        return
    config = load_our_config(spec)
    result = train(config, fresh=True)
    print(RUN_DIR_MARKER + str(result.run_dir), flush=True)


CHILD_MODES: dict[str, Callable[[dict[str, Any]], None]] = {
    "nanogpt-prepare": child_nanogpt_prepare,
    "nanogpt-sample": child_nanogpt_sample,
    "our-prepare": child_our_prepare,
    "our-train": child_our_train,
    "our-sample": child_our_sample,
    "whole-val": child_whole_val,
}


# --------------------------------------------------------------------------- sections


def reference(measured: dict[str, Any] | None, key: str) -> tuple[float | None, bool]:
    """nanoGPT's figure: measured in this run, else the issue's (second item True)."""
    if measured is not None:
        if "error" in measured or "skipped" in measured:
            return None, False
        value = measured.get(key)
        return (float(value) if value is not None else None), False
    value = ISSUE_REFERENCE.get(key)
    return value, value is not None


def status(result: dict[str, Any] | None) -> str | None:
    """Why a side has no figures ('not available yet', 'skipped: ...', 'error'), if so."""
    if result is None:
        return None
    if "unavailable" in result:
        return "not available yet"
    if "skipped" in result:
        return "skipped"  # the reason is printed in the section and kept in the JSON
    if "error" in result:
        return "error"
    return None


class Report:
    """Collects the summary table rows and every figure for --json."""

    def __init__(self) -> None:
        self.rows: list[list[str]] = []
        self.used_issue_reference = False
        self.targets: list[tuple[str, bool]] = []

    def add(
        self,
        figure: str,
        ours: float | None,
        theirs: float | None,
        *,
        digits: int = 1,
        from_issue: bool = False,
        target: str = "",
        met: bool | None = None,
        ours_note: str | None = None,
        theirs_note: str | None = None,
        show_ratio: bool = True,
    ) -> None:
        r = ratio(ours, theirs) if show_ratio else None
        theirs_text = theirs_note or fmt(theirs, digits)
        if from_issue and theirs is not None:
            theirs_text += "*"
            self.used_issue_reference = True
        verdict = "" if met is None else ("PASS" if met else "MISS")
        if met is not None:
            self.targets.append((figure, met))
        self.rows.append(
            [
                figure,
                ours_note or fmt(ours, digits),
                theirs_text,
                fmt(r, 2, "x") if r is not None else "-",
                target,
                verdict,
            ]
        )

    def print(self) -> None:
        heading("Summary")
        say(table(["figure", "ours", "nanoGPT", "ours/nanoGPT", "target", "met?"], self.rows))
        if self.used_issue_reference:
            say(
                "* the issue's nanoGPT figure for this machine class, not measured in this run "
                "(pass --nanogpt PATH to measure it here)."
            )


def skipped_ours() -> dict[str, Any]:
    return {"skipped": "--skip-ours"}


def print_errors(name: str, result: dict[str, Any] | None) -> None:
    if result and "error" in result:
        say(f"  {name}: {result['error']}")
    elif result and "unavailable" in result:
        say(f"  {name}: not available yet ({result['unavailable']})")
    elif result and "skipped" in result:
        say(f"  {name}: skipped: {result['skipped']}")


def section_prepare(
    report: Report, nanogpt: Path | None, work: Path, repeats: int, run_ours: bool
) -> dict[str, Any]:
    section_heading("Data preparation (tiny Shakespeare, 1.1 MB)")
    out: dict[str, Any] = {"ours": {}, "nanogpt": {}}
    for label, experiment, prepare, ng_dataset in (
        ("char", "shakespeare_char", {}, "shakespeare_char"),
        ("tiktoken:gpt2", "text", {"tokenizer": "tiktoken:gpt2"}, "shakespeare"),
        ("bpe", "text", {"tokenizer": "bpe"}, None),
    ):
        ours = (
            our_prepare(work, experiment, prepare, label.replace(":", "-"), repeats)
            if run_ours
            else skipped_ours()
        )
        print_errors(f"ours ({label})", ours)
        out["ours"][label] = ours
        theirs: dict[str, Any] | None = None
        if nanogpt is not None and ng_dataset is not None:
            theirs = nanogpt_prepare(nanogpt, ng_dataset, repeats)
            print_errors(f"nanoGPT data/{ng_dataset}/prepare.py", theirs)
            out["nanogpt"][label] = theirs
        say(
            f"  {label}: ours {fmt(ours.get('mb_per_sec'), 2)} MB/s"
            + (f", nanoGPT {fmt(theirs.get('mb_per_sec'), 2)} MB/s" if theirs else "")
        )
        report.add(
            f"prepare {label} (MB/s)",
            ours.get("mb_per_sec"),
            theirs.get("mb_per_sec") if theirs else None,
            digits=2,
            ours_note=status(ours),
            theirs_note=status(theirs) if theirs else ("n/a" if ng_dataset is None else None),
            target="report",
        )
    return out


def section_train(
    report: Report, nanogpt: Path | None, work: Path, iters: int, run_ours: bool
) -> dict[str, Any]:
    section_heading(f"Training: nanoGPT's CPU recipe, {iters} iterations")
    theirs: dict[str, Any] | None = None
    if nanogpt is not None:
        say("nanoGPT:")
        theirs = nanogpt_train(nanogpt, iters, work)
        print_errors("nanoGPT", theirs)
    say("ours:")
    overrides = recipe_overrides(work, "shakespeare_char", max_iters=iters, lr_decay_iters=iters)
    ours = our_train(work, None, overrides, "recipe") if run_ours else skipped_ours()
    print_errors("ours", ours)
    for name, res in (("nanoGPT", theirs), ("ours", ours)):
        if res and not status(res):
            say(
                f"  {name}: {speed_summary(res)}, val loss "
                f"{fmt(res['final_val_loss'], 4)} @ {res['final_iter']}, "
                f"val <= {TARGET_VAL_LOSS} at {fmt(res['seconds_to_target'], 1)} s, "
                f"{fmt(res['process_wall_seconds'], 1)} s in all, "
                f"peak RSS {fmt(res['peak_rss_mb'], 0)} MB"
            )
    ok: dict[str, Any] = ours if not status(ours) else {}

    def ref(key: str) -> tuple[float | None, bool]:
        return reference(theirs, key)

    tps, tps_issue = ref("tokens_per_sec")
    tps_ratio = ratio(ok.get("tokens_per_sec"), tps)
    report.add(
        "train tokens/s (median step)",
        ok.get("tokens_per_sec"),
        tps,
        digits=0,
        from_issue=tps_issue,
        target=f">= {MIN_TRAIN_SPEED_RATIO}x",
        met=None if tps_ratio is None else tps_ratio >= MIN_TRAIN_SPEED_RATIO,
        ours_note=status(ours),
    )
    wall, _ = reference(theirs, "wall_tokens_per_sec") if theirs else (None, False)
    report.add(
        "  tokens/s by wall clock",
        ok.get("wall_tokens_per_sec"),
        wall,
        digits=0,
        target="report",
        ours_note=status(ours),
    )
    ms, ms_issue = ref("ms_per_iter")
    report.add("train ms/iter (median)", ok.get("ms_per_iter"), ms, digits=2, from_issue=ms_issue)
    val, val_issue = ref("final_val_loss")
    if val_issue and iters != 2000:
        val = None  # the issue's figure is for 2000 iterations
    our_val = ok.get("final_val_loss")

    def at_iter(res: dict[str, Any] | None) -> str | None:
        """The val loss with its iteration when the last evaluation was not at --iters."""
        if not res or status(res) or res.get("final_iter") in (None, iters):
            return status(res) if res else None
        return f"{res['final_val_loss']:.4f} (@{res['final_iter']})"

    report.add(
        f"val loss @ {iters}",
        our_val,
        val,
        digits=4,
        from_issue=val_issue,
        target=f"<= {TARGET_VAL_LOSS}",
        met=None if our_val is None else our_val <= TARGET_VAL_LOSS,
        ours_note=at_iter(ours),
        theirs_note=at_iter(theirs),
        show_ratio=False,
    )
    whole = whole_val(work, nanogpt, ours, theirs) if run_ours or theirs else {}
    for name, res in whole.items():
        say(
            f"  {name}: whole val split: "
            + (
                f"val loss {res['val_loss']:.4f} over {res['val_tokens']} tokens @ {res['iter']}"
                if "val_loss" in res
                else res.get("error") or f"skipped: {res.get('skipped')}"
            )
        )
    report.add(
        f"  val loss @ {iters}, whole val split",
        whole.get("ours", {}).get("val_loss"),
        whole.get("nanogpt", {}).get("val_loss"),
        digits=4,
        target="report",
        show_ratio=False,
    )
    t_target, t_issue = ref("seconds_to_target")
    report.add(
        f"recipe: s to val <= {TARGET_VAL_LOSS}",
        ok.get("seconds_to_target"),
        t_target,
        from_issue=t_issue,
        target="report",
    )
    rss, rss_issue = ref("peak_rss_mb")
    rss_ratio = ratio(ok.get("peak_rss_mb"), rss)
    report.add(
        "train peak RSS (MB)",
        ok.get("peak_rss_mb"),
        rss,
        digits=0,
        from_issue=rss_issue,
        target=f"<= {MAX_RSS_RATIO}x",
        met=None if rss_ratio is None else rss_ratio <= MAX_RSS_RATIO,
        ours_note=status(ours),
    )
    return {"ours": ours, "nanogpt": theirs, "whole_val_split": whole}


def section_compile(
    report: Report, nanogpt: Path | None, work: Path, run_ours: bool
) -> dict[str, Any]:
    """The recipe with torch.compile on both sides: the compiled step, and what the compile
    costs the first step (the issue's nanoGPT: 19,000 tokens/s after a 33 s compile)."""
    n = COMPILE_ITERS
    section_heading(f"torch.compile: the recipe compiled, {n} iterations")
    theirs: dict[str, Any] | None = None
    if nanogpt is not None:
        say("nanoGPT:")
        theirs = nanogpt_train_compiled(nanogpt, work)
        print_errors("nanoGPT", theirs)
    say("ours:")
    overrides = recipe_overrides(
        work, "shakespeare_char", compile=True, max_iters=n, lr_decay_iters=n, eval_interval=n
    )
    ours = (
        our_train(work, None, overrides, "compiled", cold_compile_cache(work, "ours"))
        if run_ours
        else skipped_ours()
    )
    print_errors("ours", ours)
    for name, res in (("nanoGPT", theirs), ("ours", ours)):
        if res and not status(res):
            say(
                f"  {name}: {speed_summary(res)}, first step "
                f"{fmt(res['first_step_seconds'], 1)} s, "
                f"{fmt(res['process_wall_seconds'], 1)} s in all"
            )
    say(
        "  (nanoGPT's first step also runs its step-0 evaluation, compiling the eval-mode "
        "graph too; ours evaluates with the eager model)"
    )
    ok: dict[str, Any] = ours if not status(ours) else {}
    tps, tps_issue = reference(
        theirs, "compiled_tokens_per_sec" if theirs is None else "tokens_per_sec"
    )
    report.add(
        "compiled tokens/s (median step)",
        ok.get("tokens_per_sec"),
        tps,
        digits=0,
        from_issue=tps_issue,
        target="report",
        ours_note=status(ours),
    )
    first, first_issue = reference(theirs, "first_step_seconds")
    report.add(
        "  compiled first step (s)",
        ok.get("first_step_seconds"),
        first,
        from_issue=first_issue,
        target="report",
        ours_note=status(ours),
    )
    return {"ours": ours, "nanogpt": theirs}


def section_fast(
    report: Report, work: Path, nanogpt_train_result: dict[str, Any] | None
) -> dict[str, Any]:
    """Our shipped fast config against nanoGPT's time to the target (``train`` section)."""
    section_heading(f"Our fast CPU config: time to val loss <= {TARGET_VAL_LOSS}")
    if not FAST_CONFIG.exists():
        say(f"  skipped: {FAST_CONFIG.relative_to(REPO)} does not exist yet.")
        report.add(
            f"fast config: s to val <= {TARGET_VAL_LOSS}",
            None,
            None,
            ours_note="not shipped yet",
            target=f"<= {MAX_FAST_TIME_RATIO}x",
        )
        return {"skipped": f"{FAST_CONFIG} does not exist"}
    overrides = our_overrides(work, "shakespeare_char_fast", {})
    ours = our_train(work, FAST_CONFIG, overrides, "fast")
    print_errors("ours (fast)", ours)
    ok: dict[str, Any] = ours if not status(ours) else {}
    if ok:
        say(
            f"  val <= {TARGET_VAL_LOSS} at {fmt(ok['seconds_to_target'], 1)} s (iteration "
            f"{ok['iter_at_target']}); final val loss {fmt(ok['final_val_loss'], 4)} @ "
            f"{ok['final_iter']}; {fmt(ok['process_wall_seconds'], 1)} s in all; peak RSS "
            f"{fmt(ok['peak_rss_mb'], 0)} MB"
        )
    theirs, from_issue = reference(nanogpt_train_result, "seconds_to_target")
    if theirs is None:
        if nanogpt_train_result is not None and not status(nanogpt_train_result):
            say("  nanoGPT did not reach the target in its run; comparing with the issue's time.")
        theirs, from_issue = reference(None, "seconds_to_target")
    r = ratio(ok.get("seconds_to_target"), theirs)
    report.add(
        f"fast config: s to val <= {TARGET_VAL_LOSS}",
        ok.get("seconds_to_target"),
        theirs,
        from_issue=from_issue,
        target=f"<= {MAX_FAST_TIME_RATIO}x",
        met=None if r is None else r <= MAX_FAST_TIME_RATIO,
        ours_note=status(ours) or ("never" if ok and ok["seconds_to_target"] is None else None),
    )
    return {"ours": ours, "nanogpt_seconds_to_target": theirs, "from_issue": from_issue}


def section_sample(
    report: Report, nanogpt: Path | None, work: Path, run_ours: bool
) -> dict[str, Any]:
    section_heading(f"Sampling: {SAMPLE_NEW_TOKENS} new tokens, random 4x4x128 model, batch 1")
    ours = our_sample(work) if run_ours else skipped_ours()
    print_errors("ours", ours)
    theirs = nanogpt_sample(nanogpt) if nanogpt is not None else None
    print_errors("nanoGPT", theirs)
    ok: dict[str, Any] = ours if not status(ours) else {}
    cache = ok.get("cache", {}).get("tokens_per_sec")
    no_cache = ok.get("no_cache", {}).get("tokens_per_sec")
    if nanogpt is not None:
        ng, ng_issue = reference(theirs, "tokens_per_sec")
    else:
        ng, ng_issue = reference(None, "sample_tokens_per_sec")
    say(
        f"  ours: KV cache {fmt(cache, 0)} tokens/s, no cache {fmt(no_cache, 0)} tokens/s"
        + (f"; nanoGPT generate {fmt(ng, 0)} tokens/s" if theirs and not status(theirs) else "")
    )
    r = ratio(cache, ng)
    report.add(
        "sample tokens/s, KV cache",
        cache,
        ng,
        digits=0,
        from_issue=ng_issue,
        target=f">= {MIN_KV_SAMPLE_RATIO}x",
        met=None if r is None else r >= MIN_KV_SAMPLE_RATIO,
        ours_note=status(ours),
    )
    report.add(
        "sample tokens/s, no cache",
        no_cache,
        ng,
        digits=0,
        from_issue=ng_issue,
        ours_note=status(ours),
    )
    report.add(
        "  KV cache vs our no cache",
        cache,
        no_cache,
        digits=0,
        theirs_note=f"{fmt(no_cache, 0)} (ours)" if no_cache else None,
        target="report",
        ours_note=status(ours),
    )
    return {"ours": ours, "nanogpt": theirs}


def section_gpt2_vocab(
    report: Report, nanogpt: Path | None, work: Path, run_ours: bool
) -> dict[str, Any]:
    """The recipe's model on GPT-2 BPE tokens, where a step's largest tensors are its logits
    (50,257 per position): ours as shipped, ours without huge pages, and nanoGPT."""
    n = GPT2_VOCAB_ITERS
    section_heading(f"GPT-2 vocabulary: the recipe's model on tiktoken tokens, {n} iterations")
    overrides = recipe_overrides(
        work,
        "shakespeare",
        max_iters=n,
        lr_decay_iters=n,
        warmup_iters=4,
        eval_interval=n,
        eval_iters=2,
    )
    results: dict[str, Any] = {}
    runs = [("ours", {}), ("ours, no huge pages", {"THP_MEM_ALLOC_ENABLE": "0"})]
    for name, env in runs if run_ours else []:
        say(f"{name}:")
        res = our_train(work, GPT2_VOCAB_CONFIG, overrides, f"gpt2-vocab-{len(results)}", env)
        if status(res) == "skipped":  # tiktoken could not fetch the GPT-2 encoding
            res = {"skipped": "offline: set TIKTOKEN_CACHE_DIR (bench/tiktoken_gpt2.py DIR)"}
        print_errors(name, res)
        results[name] = res
        if status(res) == "skipped":
            break
    if nanogpt is not None and not any(status(r) == "skipped" for r in results.values()):
        say("nanoGPT:")
        results["nanoGPT"] = nanogpt_train_gpt2_vocab(nanogpt, work)
        print_errors("nanoGPT", results["nanoGPT"])
    ok = {name: res for name, res in results.items() if not status(res)}
    for name, res in ok.items():
        say(
            f"  {name}: {fmt(res['ms_per_iter'], 1)} ms/iter, "
            f"{fmt(res['tokens_per_sec'], 0)} tokens/s, peak RSS {fmt(res['peak_rss_mb'], 0)} MB"
        )
    theirs = ok.get("nanoGPT", {})
    for name in ("ours", "ours, no huge pages"):
        if name in results:
            report.add(
                f"gpt2 vocab tokens/s{'' if name == 'ours' else ', no huge pages'}",
                ok.get(name, {}).get("tokens_per_sec"),
                theirs.get("tokens_per_sec"),
                digits=0,
                target="report",
                ours_note=status(results[name]),
            )
    if "ours" in results:
        report.add(
            "gpt2 vocab peak RSS (MB)",
            ok.get("ours", {}).get("peak_rss_mb"),
            theirs.get("peak_rss_mb"),
            digits=0,
            target="report",
            ours_note=status(results["ours"]),
        )
    return results


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark mlharness's lm engine against nanoGPT on this machine: data "
        "preparation, training speed and loss on nanoGPT's CPU recipe, our fast CPU config, "
        "and sampling with and without a KV cache.",
    )
    parser.add_argument(
        "--nanogpt",
        metavar="PATH",
        type=Path,
        help="a nanoGPT work tree (with train.py, model.py) to measure side by side; "
        "without it the issue's reference figures are shown, marked '*'",
    )
    parser.add_argument(
        "--iters",
        type=int,
        default=2000,
        help="training iterations of the recipe, both sides (default 2000; the val-loss "
        "target is for 2000)",
    )
    parser.add_argument(
        "--prepare-repeats",
        type=int,
        default=3,
        help="timed data preparations per tokenizer, after one warm-up (default 3)",
    )
    parser.add_argument(
        "--skip-ours",
        action="store_true",
        help="measure only the nanoGPT side (with --nanogpt), e.g. to record its figures",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch directory (runs, data, checkpoints)"
    )
    add_common_options(parser, SECTIONS)
    args = parser.parse_args(argv)
    if args.iters < 1:
        parser.error("--iters must be at least 1")
    if args.prepare_repeats < 1:
        parser.error("--prepare-repeats must be at least 1")
    if args.skip_ours and not args.nanogpt:
        parser.error("--skip-ours leaves nothing to measure without --nanogpt")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if run_child_mode(args, CHILD_MODES):
        return 0

    nanogpt: Path | None = args.nanogpt.expanduser().resolve() if args.nanogpt else None
    if nanogpt is not None and (problem := check_nanogpt(nanogpt)):
        print(f"Error: {problem}", file=sys.stderr)
        return 1
    if not TEXT.exists():
        print(f"Error: tiny Shakespeare not found at {TEXT}.", file=sys.stderr)
        return 1
    sections = args.only or list(SECTIONS)

    started = time.perf_counter()
    facts = machine_facts()
    say("mlharness lm benchmark" + (f" against nanoGPT at {nanogpt}" if nanogpt else ""))
    say(f"command: {' '.join([Path(PYTHON).name, *sys.argv])}")
    print_machine(facts)
    work = Path(tempfile.mkdtemp(prefix="mlx-lm-bench-"))
    say(f"scratch directory: {work}")
    report = Report()
    figures: dict[str, Any] = {
        "machine": facts,
        "nanogpt": str(nanogpt) if nanogpt else None,
        "iters": args.iters,
        "issue_reference": ISSUE_REFERENCE,
        "sections": {},
    }
    ours = not args.skip_ours
    done = figures["sections"]
    try:
        if "prepare" in sections:
            done["prepare"] = section_prepare(report, nanogpt, work, args.prepare_repeats, ours)
            save_json(args.json, figures)
        train_result: dict[str, Any] | None = None
        if "train" in sections:
            done["train"] = section_train(report, nanogpt, work, args.iters, ours)
            train_result = done["train"]["nanogpt"]
            save_json(args.json, figures)
        if "compile" in sections:
            done["compile"] = section_compile(report, nanogpt, work, ours)
            save_json(args.json, figures)
        if "fast" in sections and ours:
            done["fast"] = section_fast(report, work, train_result)
            save_json(args.json, figures)
        if "sample" in sections:
            done["sample"] = section_sample(report, nanogpt, work, ours)
            save_json(args.json, figures)
        if "gpt2vocab" in sections:
            done["gpt2vocab"] = section_gpt2_vocab(report, nanogpt, work, ours)
    finally:
        if args.keep:
            say(f"\nscratch directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    report.print()
    figures["targets"] = dict(report.targets)
    finish(figures, started, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
