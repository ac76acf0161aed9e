"""lm training at nanoGPT's shakespeare_char GPU config, shrunk to fit the CPU, against nanoGPT.

Run it from the repository root with the project's virtual environment::

    .venv/bin/python bench/lm_large.py --nanogpt /tmp/nanogpt        # 2 rounds, ~12 minutes
    .venv/bin/python bench/lm_large.py --nanogpt /tmp/nanogpt --rounds 1 --iters 8
    .venv/bin/python bench/lm_large.py --only profile                 # where our step goes

The model of nanoGPT's ``config/train_shakespeare_char.py`` (6 layers, 6 heads, 384 wide,
block 256, no biases, 10.7M parameters, the 65 characters of tiny Shakespeare from
``../shared/data``) and its optimizer settings (AdamW, lr 1e-3 with 100 warm-up iterations,
beta2 0.99, weight decay 0.1, clipping at 1.0), float32 on the CPU with ``--threads``
torch threads (``OMP_NUM_THREADS``, ``OMP_WAIT_POLICY=PASSIVE``) on both sides. Shrunk to
fit the CPU: ``--batch-size`` 12 windows a step instead of 64 (nanoGPT's README CPU recipe's
batch; a step is then about 2 s on 2 cores, not 10), ``--iters`` iterations, one-batch
evaluations at the start (nanoGPT) and the end (both). Dropout is the config's 0.2, and 0
as a second setup (``--dropouts``): our trainer splits a dropout-free batch across the
threads (``train.cpu_batch_split``), which it cannot do with dropout.

Ours: ``experiments/shakespeare_char.toml`` with those overrides, trained by what ``mlx
train`` runs (``bench/lm.py``'s ``our-train`` child, as that bench does). nanoGPT: its
``train.py`` with the config file and the same overrides on its command line. Each round
runs every setup on both sides, nanoGPT and ours alternated (who goes first swaps each
round), the load average printed before each run.

Sections (``--only``, comma-separated):

``train``
    Median step time of the iterations after the first ``--warmup`` ones and before the
    last (nanoGPT's ``iter N: ... time Yms`` lines; it evaluates inside iterations 0 and
    ``--iters``; our ``step_time_ms`` records), tokens/s (batch x 256 / that), the ratio,
    and the achieved GFLOP/s: model FLOPs per token by nanoGPT's ``estimate_mfu`` (PaLM's
    appendix B: 6N + 12 L H Q T, N the parameters without the position embeddings; the
    attention term counts the full T x T scores, where a causal kernel computes about half)
    against this machine's sgemm peak (``report.sgemm_peak_gflops``, a 2048^3 float32 matmul
    with the same threads, measured in a child before every round).
``profile``
    Our step in-process (dropout as the first of ``--dropouts``), with timers around the
    forward with the loss, the backward, clipping, AdamW and the gradient clearing of the
    whole batch in one thread team (torch's own threading), over ``--profile-steps`` steps
    after two warm-up steps; torch.profiler's top operators over one such step; and the
    trainer's own step, which splits the batch across the threads (``ThreadShards``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lm import NANOGPT_ITER_LINE, RUN_DIR_MARKER, TEXT, check_nanogpt, load_our_config, our_child
from report import (  # bench/ is on sys.path when a script runs
    ChildRun,
    add_common_options,
    child_env,
    emit,
    finish,
    fmt,
    heading,
    load_line,
    median,
    print_header,
    ratio,
    run_child,
    run_child_mode,
    save_json,
    say,
    self_command,
    sgemm_peak_gflops,
    table,
)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "experiments" / "shakespeare_char.toml"
SECTIONS = ("train", "profile")
SIDES = ("ours", "nanogpt")

# nanoGPT's config/train_shakespeare_char.py, which our CONFIG mirrors.
N_LAYER, N_HEAD, N_EMBD, BLOCK, VOCAB = 6, 6, 384, 256, 65
NANOGPT_CONFIG = "config/train_shakespeare_char.py"

# The aims.
MIN_TOKENS_RATIO = 1.2
MIN_PEAK_SHARE = 0.6


def flops_per_token() -> int:
    """nanoGPT's ``estimate_mfu``: 6N + 12 L H Q T (PaLM, appendix B), no biases."""
    per_layer = 12 * N_EMBD * N_EMBD + 2 * N_EMBD  # attention and MLP matrices, 2 LayerNorms
    params = N_LAYER * per_layer + VOCAB * N_EMBD + N_EMBD  # tied embedding/head, ln_f
    return 6 * params + 12 * N_LAYER * N_EMBD * BLOCK


def step_figures(step_ms: dict[int, float], iters: int, warmup: int, batch: int) -> dict[str, Any]:
    """Speed from the iterations in [warmup, iters), which no evaluation shares."""
    timed = [ms for it, ms in step_ms.items() if warmup <= it < iters]
    if not timed:
        return {"error": f"no timed iterations among {sorted(step_ms)}"}
    ms = statistics.median(timed)
    tokens = batch * BLOCK * 1000 / ms
    return {
        "ms_per_iter": ms,
        "ms_per_iter_p10": statistics.quantiles(timed, n=10)[0] if len(timed) > 1 else ms,
        "tokens_per_sec": tokens,
        "gflops": tokens * flops_per_token() / 1e9,
        "timed_iters": len(timed),
    }


# --------------------------------------------------------------------------- the two sides


def our_spec(work: Path, args: argparse.Namespace, dropout: float, label: str) -> dict[str, Any]:
    """``experiments/shakespeare_char.toml`` shrunk to the CPU (see the module docstring)."""
    n = args.iters
    train = {
        "batch_size": args.batch_size,
        "max_iters": n,
        "lr_decay_iters": n,
        "eval_interval": n,
        "eval_iters": 1,
        "log_interval": 1,
        "device": "cpu",
        "dtype": "float32",
        "compile": False,
        "num_threads": args.threads,
    }
    overrides = {
        "prepare": {"input": str(TEXT), "data_dir": str(work / "data" / "shakespeare_char")},
        "output": {"directory": str(work / "runs" / label)},
        "model": {"dropout": dropout},
        "train": train,
    }
    return {"config": str(CONFIG), "experiment": None, "overrides": overrides}


def env(threads: int) -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def our_run(work: Path, args: argparse.Namespace, dropout: float, label: str) -> dict[str, Any]:
    spec = our_spec(work, args, dropout, label)
    run = our_child("our-train", spec, work, env(args.threads))
    run_dir = run.marker(RUN_DIR_MARKER)
    if not run.ok or run_dir is None:
        return {"error": f"our training failed (exit {run.returncode}):\n{run.tail()}"}
    records = Path(run_dir, "metrics", "metrics.ndjson").read_text().splitlines()
    steps = [json.loads(r) for r in records if '"step_time_ms"' in r]
    # Our records count steps done (1 after the first); nanoGPT numbers them from 0.
    step_ms = {int(r["iter"]) - 1: float(r["step_time_ms"]) for r in steps}
    return figures(step_ms, run, args)


def nanogpt_run(root: Path, work: Path, args: argparse.Namespace, dropout: float) -> dict[str, Any]:
    n = args.iters
    cmd = [
        sys.executable,
        "-u",
        "train.py",
        NANOGPT_CONFIG,
        "--device=cpu",
        "--dtype=float32",
        "--compile=False",
        f"--batch_size={args.batch_size}",
        f"--dropout={dropout}",
        f"--max_iters={n}",
        f"--lr_decay_iters={n}",
        f"--eval_interval={n}",
        "--eval_iters=1",
        "--log_interval=1",
        f"--out_dir={work / 'nanogpt-out'}",
    ]
    run = run_child(cmd, cwd=root, env=child_env(**env(args.threads)))
    if not run.ok:
        return {"error": f"nanoGPT's train.py failed (exit {run.returncode}):\n{run.tail()}"}
    step_ms = {}
    for _, line in run.lines:
        if m := NANOGPT_ITER_LINE.match(line):
            step_ms[int(m.group(1))] = float(m.group(3))
    return figures(step_ms, run, args)


def figures(step_ms: dict[int, float], run: ChildRun, args: argparse.Namespace) -> dict[str, Any]:
    res = step_figures(step_ms, args.iters, args.warmup, args.batch_size)
    res.update(peak_rss_mb=run.peak_rss_mb, process_wall_s=run.wall_seconds)
    return res


def measure_peak(work: Path, threads: int) -> float | None:
    run = run_child(self_command(__file__, "peak", {"threads": threads}), cwd=REPO)
    return float(run.result()["gflops"]) if run.ok else None


# --------------------------------------------------------------------------- sections


def section_train(work: Path, args: argparse.Namespace, nanogpt: Path | None) -> dict[str, Any]:
    heading(f"Training: {args.rounds} round(s) of {args.iters} iterations a run")
    prep = our_child("our-prepare", {**our_spec(work, args, 0.0, "prep"), "repeats": 0}, work)
    if not prep.ok:
        return {"error": f"preparing our data failed:\n{prep.tail()}"}
    out: dict[str, Any] = {"peak_gflops": [], "runs": []}
    for k in range(args.rounds):
        out["peak_gflops"].append(measure_peak(work, args.threads))
        say(f"round {k + 1}: sgemm peak {fmt(out['peak_gflops'][-1], 1)} GFLOP/s")
        sides = ["nanogpt", "ours"] if nanogpt is not None else ["ours"]
        for dropout in args.dropouts:
            for side in sides if k % 2 == 0 else sides[::-1]:
                load = load_line()
                if side == "ours":
                    res = our_run(work, args, dropout, f"r{k}-d{dropout}")
                else:
                    assert nanogpt is not None
                    res = nanogpt_run(nanogpt, work, args, dropout)
                res.update(side=side, dropout=dropout, round=k + 1, load_before=load)
                out["runs"].append(res)
                say(f"  {side:8} dropout {dropout:<4} load {load}: " + describe(res))
    return out


def describe(res: dict[str, Any]) -> str:
    if "error" in res:
        return str(res["error"])
    return (
        f"{fmt(res['ms_per_iter'], 0)} ms/iter (10th percentile "
        f"{fmt(res['ms_per_iter_p10'], 0)}), {fmt(res['tokens_per_sec'], 0)} tokens/s, "
        f"{fmt(res['gflops'], 1)} GFLOP/s, peak RSS {fmt(res['peak_rss_mb'], 0)} MB"
    )


def across(runs: list[dict[str, Any]], side: str, dropout: float, key: str) -> float | None:
    """The median of one figure over a setup's runs on one side."""
    return median(
        [r[key] for r in runs if r["side"] == side and r["dropout"] == dropout and key in r]
    )


def percent(value: float | None) -> str:
    return fmt(None if value is None else 100 * value, 0, "%")


def summarise(train: dict[str, Any], dropouts: Sequence[float]) -> dict[str, Any]:
    """Medians over rounds: tokens/s of both sides, the ratio, GFLOP/s against the peak."""
    peak = median([p for p in train["peak_gflops"] if p is not None])
    rows, verdicts = [], {}
    for dropout in dropouts:
        ours, theirs = (across(train["runs"], s, dropout, "tokens_per_sec") for s in SIDES)
        ours_gf, theirs_gf = (across(train["runs"], s, dropout, "gflops") for s in SIDES)
        verdicts[f"dropout {dropout}"] = v = {
            "tokens_ratio": ratio(ours, theirs),
            "peak_share": ratio(ours_gf, peak),
            "nanogpt_peak_share": ratio(theirs_gf, peak),
        }
        rows.append(
            [
                f"dropout {dropout}",
                fmt(ours, 0),
                fmt(theirs, 0),
                fmt(v["tokens_ratio"], 2, "x"),
                fmt(ours_gf, 1),
                fmt(theirs_gf, 1),
                percent(v["peak_share"]),
                percent(v["nanogpt_peak_share"]),
            ]
        )
    heading(f"Summary (medians over rounds; sgemm peak {fmt(peak, 1)} GFLOP/s)")
    headers = ["setup", "ours tok/s", "nanoGPT", "ours/nanoGPT", "ours GFLOP/s", "nanoGPT"]
    say(table([*headers, "ours/peak", "nanoGPT/peak"], rows))
    say(
        f"aims: tokens/s >= {MIN_TOKENS_RATIO}x nanoGPT's, >= {MIN_PEAK_SHARE:.0%} of the sgemm "
        f"peak; {flops_per_token() / 1e6:.1f} MFLOP per token (6N + 12 L H Q T)"
    )
    return {"sgemm_peak_gflops": peak, "flops_per_token": flops_per_token(), "setups": verdicts}


def section_profile(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    dropout = args.dropouts[0]
    heading(f"Where our step goes (dropout {dropout}, batch {args.batch_size}, in-process)")
    spec = {**our_spec(work, args, dropout, "profile"), "steps": args.profile_steps}
    run = our_child("our-prepare", {**spec, "repeats": 0}, work)
    if run.ok:
        run = run_child(
            self_command(__file__, "profile", spec),
            cwd=REPO,
            env=child_env(MLX_WORKSPACE=str(work), **env(args.threads)),
        )
    if not run.ok:
        return {"error": f"profiling failed:\n{run.tail(25)}"}
    res: dict[str, Any] = run.result()
    total = sum(ms for _, ms in res["phases"])
    rows = [[name, fmt(ms, 1), fmt(100 * ms / total, 1)] for name, ms in res["phases"]]
    rows.append(["sum of the phases", fmt(total, 1), "100.0"])
    rows.append(["the trainer's own step (Trainer._step)", fmt(res["trainer_step_ms"], 1), ""])
    say(table(["phase", "ms/step", "%"], rows))
    gflops = args.batch_size * BLOCK * flops_per_token() / res["trainer_step_ms"] / 1e6
    say(f"the trainer's step: {gflops:.1f} GFLOP/s of model FLOPs")
    say(res["operators"])
    return res


# --------------------------------------------------------------------------- child modes


def child_peak(spec: dict[str, Any]) -> None:
    emit({"gflops": sgemm_peak_gflops(spec["threads"])})


def child_profile(spec: dict[str, Any]) -> None:
    """Timers around each phase of a step done by hand as ``Trainer._step`` does it (the
    plain path: one forward and backward of the whole batch), then the trainer's own."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from mlharness.lm.trainer import Trainer

    config = load_our_config(spec)
    trainer = Trainer(config, fresh=True, progress=False)
    model, opt, t = trainer.model, trainer.optimizer, config.train
    names = ("batch", "forward + loss", "backward", "clip_grad_norm_", "AdamW step", "zero_grad")
    spent = dict.fromkeys(names, 0.0)

    def step(timed: bool) -> None:
        marks = [time.perf_counter()]
        x, y = trainer.train_data.batch(trainer.train_data.starts(t.batch_size, trainer.batch_gen))
        marks.append(time.perf_counter())
        _, loss = model(x, y)
        marks.append(time.perf_counter())
        assert loss is not None
        loss.backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        marks.append(time.perf_counter())
        opt.step()
        marks.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        for name, a, b in zip(names, marks, marks[1:], strict=False):
            spent[name] += (b - a) * timed

    n = spec["steps"]
    for i in range(n + 2):  # two warm-up steps
        step(timed=i >= 2)
    whole = []
    with trainer.shards or contextlib.nullcontext():  # as Trainer.fit runs its steps
        for _ in range(n + 1):
            start = time.perf_counter()
            trainer._step(t.learning_rate)
            whole.append(time.perf_counter() - start)
    whole = whole[1:]  # the first warms the threads' pools up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(timed=False)
    emit(
        {
            "phases": [[name, 1000 * s / n] for name, s in spent.items()],
            "trainer_step_ms": 1000 * statistics.median(whole),
            "operators": prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14),
        }
    )


CHILD_MODES = {"peak": child_peak, "profile": child_profile}


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="lm training at nanoGPT's shakespeare_char config (6 x 6 x 384, block 256) "
        "on the CPU, side by side with nanoGPT: tokens/s, and GFLOP/s against the sgemm peak."
    )
    parser.add_argument("--nanogpt", type=Path, metavar="PATH", help="a nanoGPT work tree")
    parser.add_argument("--iters", type=int, default=12, help="iterations a run (default 12)")
    parser.add_argument(
        "--warmup", type=int, default=2, help="first iterations left out (default 2)"
    )
    parser.add_argument("--batch-size", type=int, default=12, help="windows a step (default 12)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="alternated rounds (default 2)")
    parser.add_argument(
        "--dropouts",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[0.2, 0.0],
        help="comma-separated dropout setups (default 0.2,0)",
    )
    parser.add_argument(
        "--profile-steps", type=int, default=3, help="timed steps in the profile (default 3)"
    )
    add_common_options(parser, SECTIONS)
    args = parser.parse_args(argv)
    if args.iters <= args.warmup + 1:
        parser.error("--iters must exceed --warmup by at least 2 (the last is not timed)")
    for name in ("batch_size", "threads", "rounds", "profile_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if run_child_mode(args, CHILD_MODES):
        return 0
    nanogpt = args.nanogpt.expanduser().resolve() if args.nanogpt else None
    if nanogpt is not None and (problem := check_nanogpt(nanogpt)):
        print(f"Error: {problem}", file=sys.stderr)
        return 1
    started = time.perf_counter()
    title = "lm training at nanoGPT's shakespeare_char config on the CPU"
    figures = print_header(title + (" against nanoGPT" if nanogpt else ""), ("torch", "numpy"))
    figures["settings"] = {k: v for k, v in vars(args).items() if k != "_child"}
    sections = args.only or list(SECTIONS)
    with tempfile.TemporaryDirectory(prefix="mlx-lm-large-") as tmp:
        work = Path(tmp)
        if "train" in sections:
            figures["train"] = section_train(work, args, nanogpt)
            save_json(args.json, figures)
            if "error" not in figures["train"]:
                figures["summary"] = summarise(figures["train"], args.dropouts)
        if "profile" in sections:
            figures["profile"] = section_profile(work, args)
            if "error" in figures["profile"]:
                say(figures["profile"]["error"])
    finish(figures, started, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
