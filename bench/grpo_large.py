"""GRPO at a GPT-2-small shape against TRL's ``GRPOTrainer``: full fine-tuning and LoRA.

Run it from the repository root with the project's virtual environment::

    .venv/bin/python bench/grpo_large.py                    # 1 round, 4 steps a run, ~12 min
    .venv/bin/python bench/grpo_large.py --only train --steps 3
    .venv/bin/python bench/grpo_large.py --repeats 2 --steps 6 --json grpo_large.json
    .venv/bin/python bench/grpo_large.py --only profile,decode    # where our step goes

The task of ``bench/grpo.py`` (1 "a+b=" prompt x 8 completions a step, temperature 1,
constant learning rate 1e-5, AdamW (0.9, 0.999) without weight decay, clipping at 1.0, beta 0,
``loss_type="dapo"``, float32 on CPU, ``--threads`` threads, ``OMP_WAIT_POLICY=PASSIVE``) at
a realistic size: a random GPT-2-small (12 layers, 768 wide, 12 heads, 1,024 positions,
GPT-2's 50,257-token vocabulary and its default dropout 0.1) and completions of up to 128
tokens. The tokenizer is the 49-token character tokenizer of ``mlharness.rl.tiny_models``
padded with filler tokens to 50,257 ids (a real BPE would change nothing here: the prompts
are a few characters, and the random model samples from all 50,257 ids, so it almost never
draws EOS and every completion runs to 128 tokens on both sides).

Modes: ``full`` (every weight trains) and ``lora`` (r 16, alpha 32, dropout 0 on ``c_attn``,
``c_proj`` and ``c_fc``, the same PEFT config on both sides). TRL runs its default
configuration for this task (the settings of ``bench/grpo.py``, which keep the model's
dropout in the training forward) and, for full fine-tuning, also with ``disable_dropout=True``
(ours always turns the model's dropout off, as TRL's option does). Each round runs every
side once, alternated; each run is a fresh process of ``--steps`` steps whose first is left
out (warm-up). The load average is printed before each run.

Sections (``--only``, comma-separated):

``train``
    s/step (median), steps/s ratio, peak RSS (the process tree's, polled, and ``ru_maxrss``).
``profile``
    Our step in-process with timers (``bench/grpo.py``'s profile, without its
    micro-benchmarks): generation (prefill, decode forwards, sampling), the training forward,
    backward, optimizer, the rest; for LoRA also with the rollouts through PEFT's forward,
    as before the adapters were folded (``--profile-steps`` timed steps after a warm-up).
``decode``
    One decode step at B=8 (median ms over 3 rounds of 16 steps after a 6-token prompt) for
    the full model, LoRA folded and LoRA through PEFT's forward; this machine's memory
    bandwidth (a 512 MB ``torch`` copy, read + write, with ``--threads`` threads); the bytes a
    token step must read (every weight once, the KV cache at 70 positions) and the time that
    takes at that bandwidth, against the measured step. Then our GPT at the same shape: the
    plain path on weights packed for oneDNN (what rollouts of wide models use), in int8
    (``generation.int8_rollouts``), with the head as a contiguous copy (``mlx sample``) or
    the weight's view (before); the modules' forward in float32 and in int8
    (``quantize_dynamic``); and one token draw from 8 x 50,257 logits by
    inverse CDF (now) and by an exponential race (before).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpo  # bench/ is on sys.path when a script runs
from grpo import Summary, across, bench_env, summarise_steps, write_config
from report import (
    copy_bandwidth_gbs,
    emit,
    finish,
    fmt,
    heading,
    load_line,
    print_header,
    run_child,
    say,
    section_parser,
    self_command,
    sgemm_peak_gflops,
    table,
)

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MLX = Path(PYTHON).with_name("mlx")
SECTIONS = ("train", "profile", "decode")

MODEL_SHAPE: dict[str, Any] = {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024}
VOCAB = 50257  # GPT-2's
MAX_COMPLETION = 128
LORA: dict[str, Any] = {
    "r": 16,
    "alpha": 32.0,
    "dropout": 0.0,
    "target_modules": ["c_attn", "c_proj", "c_fc"],
}
DEVICE = "cpu"  # --device: where our side trains (TRL's side and the decode section: the CPU)
MIN_STEPS_RATIO = 1.5  # the aims, against TRL's default configuration
MAX_RSS_RATIO = 0.8
# (mode, side): ours, ours with generation.int8_rollouts, TRL's default configuration, TRL
# with disable_dropout=True
RUNS = [
    ("full", "trl"),
    ("full", "trl-nodrop"),
    ("full", "ours"),
    ("full", "ours-int8"),
    ("lora", "trl"),
    ("lora", "ours"),
    ("lora", "ours-int8"),
]


def child(mode: str, spec: dict[str, Any], work: Path, threads: int) -> Any:
    cmd = self_command(__file__, mode, spec)
    return run_child(cmd, cwd=REPO, env=bench_env(work, threads))


# --------------------------------------------------------------------------- runs


def our_settings(
    work: Path, mode: str, steps: int, threads: int, runs: Path, int8: bool = False
) -> dict[str, Any]:
    config = grpo.our_config(work, steps, threads, runs)
    config["name"] = f"grpo_large_{mode}"
    config["data"]["max_gen_len"] = MAX_COMPLETION
    config["trainer"]["device"] = DEVICE
    config.setdefault("generation", {})["int8_rollouts"] = int8
    if mode == "lora":
        config["model"].update(
            use_lora=True,
            lora_rank=LORA["r"],
            lora_alpha=LORA["alpha"],
            lora_dropout=LORA["dropout"],
            lora_target_modules=LORA["target_modules"],
        )
    return config


def our_run(
    work: Path, mode: str, steps: int, threads: int, label: str, int8: bool = False
) -> dict[str, Any]:
    runs = work / f"ours-{mode}-{label}{'-int8' * int8}"
    config = write_config(
        work / f"grpo_large_{mode}.yaml", our_settings(work, mode, steps, threads, runs, int8)
    )
    cmd = [str(MLX), "train", "--config", str(config), "--fresh"]
    run = run_child(cmd, cwd=REPO, env=bench_env(work, threads), tail_dir=runs)
    run_dir = run.marker(grpo.RUN_DIR_LINE)
    if not run.ok or run_dir is None:
        return {"error": f"mlx train failed (exit {run.returncode}):\n{run.tail(25)}"}
    lines = (Path(run_dir) / "metrics" / "metrics.ndjson").read_text().splitlines()
    records = [r for r in map(json.loads, filter(None, lines)) if "step_time_s" in r]
    out = summarise_steps(
        [float(r["step_time_s"]) for r in records],
        [float(r["step_time_s"]) * float(r["generation_share"]) for r in records],
        [float(r["completion_length"]) * grpo.GROUP_SIZE for r in records],
        [float(r["completion_length"]) for r in records],
        [float(r["truncation_rate"]) for r in records],
        [],
    )
    out.update(command=" ".join(["mlx", *cmd[1:]]), peak_rss_mb=run.peak_rss_mb)
    out["process_wall_s"] = run.wall_seconds
    if int8:  # how far the int8 sampler was from the policy: the mean importance weight
        out["is_weight"] = statistics.mean(float(r["is_weight"]) for r in records)
        out["is_truncated"] = statistics.mean(float(r["is_truncated"]) for r in records)
    return out


def trl_run(work: Path, mode: str, side: str, steps: int, threads: int, label: str) -> Any:
    spec = {
        "model": str(work / "model"),
        "data": str(work / "prompts.jsonl"),
        "output_dir": str(work / f"trl-{mode}-{side}-{label}"),
        "steps": steps,
        "threads": threads,
        "lora": LORA if mode == "lora" else None,
        "settings": {"disable_dropout": True} if side == "trl-nodrop" else {},
    }
    run = child("trl-train", spec, work, threads)
    if not run.ok:
        return {"error": f"TRL's GRPOTrainer failed (exit {run.returncode}):\n{run.tail(25)}"}
    res = run.result()
    per_step = res.pop("per_step")
    out = summarise_steps(
        [s["step_s"] for s in per_step],
        [s["gen_s"] for s in per_step],
        [sum(s["lengths"]) for s in per_step],
        [sum(s["lengths"]) / len(s["lengths"]) for s in per_step if s["lengths"]],
        [s["truncated"] / len(s["lengths"]) for s in per_step if s["lengths"]],
        [],
    )
    out.update(peak_rss_mb=run.peak_rss_mb, process_wall_s=run.wall_seconds, dtype=res["dtype"])
    return out


def section_train(work: Path, steps: int, threads: int, repeats: int, trl: bool) -> Any:
    heading(
        f"Training: {steps} steps a run (the first left out), 1 prompt x {grpo.GROUP_SIZE} "
        f"completions of <= {MAX_COMPLETION} tokens, {threads} threads, {repeats} round(s)",
        load=True,
    )
    out: dict[str, list[Any]] = {f"{m}/{s}": [] for m, s in RUNS if trl or not s.startswith("trl")}
    for r in range(1, repeats + 1):
        for mode, side in RUNS:
            if side.startswith("trl") and not trl:
                continue
            before = list(os.getloadavg())
            say(f"round {r}, {mode}, {side} (load {load_line()}) ...")
            if side.startswith("ours"):
                res = our_run(work, mode, steps, threads, f"r{r}", side == "ours-int8")
            else:
                res = trl_run(work, mode, side, steps, threads, f"r{r}")
            res["load_before"] = before
            out[f"{mode}/{side}"].append(res)
            describe(res)
    return out


def describe(res: dict[str, Any]) -> None:
    if "error" in res:
        say(f"  {res['error']}")
        return
    share = res["generation_share"]
    say(
        f"  {fmt(res['s_per_step'], 2)} s/step (steps: "
        f"{', '.join(f'{s:.2f}' for s in res['step_s'])}), generation "
        f"{fmt(None if share is None else 100 * share, 0)}%, mean completion "
        f"{fmt(res['mean_completion_len'], 1)} tokens, peak RSS {fmt(res['peak_rss_mb'], 0)} MB, "
        f"process {fmt(res['process_wall_s'], 0)} s"
    )


# --------------------------------------------------------------------------- profile, decode


def section_profile(work: Path, threads: int, steps: int) -> dict[str, Any]:
    heading(f"Where our step goes: {steps} train_step calls in-process after a warm-up", True)
    out: dict[str, Any] = {}
    cases = [("full", False, False), ("full", False, True), ("lora", False, False)]
    cases += [("lora", False, True), ("lora", True, False)]
    for mode, peft_rollouts, int8 in cases:
        label = f"{mode} (rollouts through PEFT's forward, before)" if peft_rollouts else mode
        label += ", int8 rollouts" * int8
        runs = work / f"profile-{mode}"
        config = write_config(
            work / f"grpo_large_profile_{mode}.yaml",
            our_settings(work, mode, steps + 2, threads, runs, int8),
        )
        spec = {"config": str(config), "steps": steps, "peft_rollouts": peft_rollouts}
        say(f"{label} (load {load_line()}) ...")
        run = child("profile", {**spec, "threads": threads, "micro": False}, work, threads)
        if not run.ok:
            out[label] = {"error": f"profile failed:\n{run.tail(25)}"}
            say(out[label]["error"])
            continue
        out[label] = run.result()
        print_phases(out[label])
    return out


def print_phases(res: dict[str, Any]) -> None:
    n = res["steps"]
    step_ms = 1000 * res["train_step_s"] / n
    rows = [
        [label, fmt(1000 * sec / n, 0), fmt(100 * sec / n * 1000 / step_ms, 1)]
        for label, sec, _ in res["phases"]
    ]
    rows.append(["train_step (total)", fmt(step_ms, 0), "100.0"])
    say(table(["phase (ours, per step)", "ms/step", "% of step"], rows))
    decode_ms = dict((k, v) for k, v, _ in res["phases"]).get("  decode forward (1 token)", 0.0)
    if res["decode_steps"]:
        say(f"  {1000 * decode_ms / res['decode_steps']:.1f} ms per one-token decode step")


def section_decode(work: Path, threads: int) -> dict[str, Any]:
    heading("One decode step at B=8, this machine's memory bandwidth, decode's share of it", True)
    run = child("decode", {"model": str(work / "model"), "threads": threads}, work, threads)
    if not run.ok:
        return {"error": f"decode measurement failed:\n{run.tail(25)}"}
    res: dict[str, Any] = run.result()
    say(
        f"memory bandwidth: {res['bandwidth_gbs']:.1f} GB/s ({res['copy_mb']:.0f} MB copy, read "
        f"+ write, median of 5); a token step reads {res['step_mb']:.0f} MB (weights "
        f"{res['weights_mb']:.0f} MB, KV cache at 70 positions {res['kv_mb']:.0f} MB): "
        f"{res['bound_ms']:.1f} ms at that bandwidth"
    )
    say(
        f"sgemm peak: {res['sgemm_gflops']:.0f} GFLOP/s (2048^3 matmul, median of 5); a token "
        f"step is {res['step_gflop']:.2f} GFLOP: {res['compute_bound_ms']:.1f} ms at that peak"
    )
    rows = [
        [
            label,
            fmt(ms, 1),
            fmt(100 * res["bound_ms"] / ms, 0),
            fmt(100 * res["compute_bound_ms"] / ms, 0),
        ]
        for label, ms in res["decode_ms"]
    ]
    headers = ["decode step (B=8)", "ms/step", "% of bandwidth bound", "% of sgemm peak"]
    say(table(headers, rows))
    say(
        table(
            ["one draw from 8 x 50,257 logits", "ms"],
            [[k, fmt(v, 2)] for k, v in res["sampling_ms"]],
        )
    )
    return res


# --------------------------------------------------------------------------- child modes


def child_setup(spec: dict[str, Any]) -> None:
    """The random GPT-2-small and the character tokenizer padded to GPT-2's 50,257 ids."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from mlharness.rl.tiny_models import CHARS, SPECIALS

    tokens = SPECIALS + list(dict.fromkeys(CHARS))
    tokens += [f"<|t{i}|>" for i in range(len(tokens), VOCAB)]
    core = Tokenizer(
        models.WordLevel(vocab={t: i for i, t in enumerate(tokens)}, unk_token="<unk>")
    )
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    eos = tok.eos_token_id
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB, **MODEL_SHAPE, bos_token_id=eos, eos_token_id=eos, pad_token_id=0
    )
    model = GPT2LMHeadModel(config)
    model.save_pretrained(spec["model"])
    tok.save_pretrained(spec["model"])
    emit({"parameters": sum(p.numel() for p in model.parameters()), "vocab": len(tok)})


def child_trl_train(spec: dict[str, Any]) -> None:
    grpo.MAX_COMPLETION = MAX_COMPLETION  # read by grpo's TRL side when it builds GRPOConfig
    grpo.child_trl_train(spec)


def child_profile(spec: dict[str, Any]) -> None:
    if spec["peft_rollouts"]:  # as before the adapters were folded: PEFT's forward
        from mlharness.rl import policy

        policy._fold_lora = lambda core, kind: None  # type: ignore[assignment]
    grpo.child_profile(spec)


def child_decode(spec: dict[str, Any]) -> None:
    """Decode steps of the three paths, the copy bandwidth and the bytes a step reads."""
    import statistics

    import torch

    from mlharness.rl.policy import add_lora, frozen_copy, hf_cache_kwarg, load_policy

    torch.set_num_threads(spec["threads"])
    policy = load_policy(Path(spec["model"]), device=torch.device("cpu"), trainable=False)
    lora = add_lora(
        frozen_copy(policy),
        rank=LORA["r"],
        alpha=LORA["alpha"],
        dropout=0.0,
        targets=LORA["target_modules"],
    )
    lora.model.eval()
    B, P, N = grpo.GROUP_SIZE, 6, 16
    prompt = torch.randint(3, 49, (B, P), generator=torch.Generator().manual_seed(0))

    def peft_step() -> Any:
        from transformers import DynamicCache

        kwargs = {hf_cache_kwarg(): DynamicCache()}
        return lambda ids: lora.model(input_ids=ids, use_cache=True, **kwargs).logits[:, -1]

    variants = [
        ("full fine-tuning: Policy.decoder (plain path)", lambda: policy.decoder(B)),
        ("LoRA r=16: Policy.decoder, adapters folded in", lambda: lora.decoder(B)),
        ("LoRA r=16 through PEFT's forward (before)", peft_step),
    ]
    times: list[list[float]] = [[] for _ in variants]
    with torch.inference_mode():
        for r in range(4):  # round 0 warms up
            for i, (_, make) in enumerate(variants):
                step = make()
                logits = step(prompt)
                t = time.perf_counter()
                for _ in range(N):
                    logits = step(logits.argmax(-1, keepdim=True))
                if r:
                    times[i].append((time.perf_counter() - t) / N * 1000)
    extra = decode_variants(B, P, N)
    cfg = policy.core.config
    weights = sum(p.numel() * p.element_size() for p in policy.model.parameters())
    weights -= policy.core.transformer.wpe.weight.numel() * 4  # one position row is read
    kv = 2 * cfg.n_layer * B * cfg.n_embd * (P + 64) * 4
    copy_mb = 512
    bandwidth = copy_bandwidth_gbs(spec["threads"], copy_mb)
    gflops = sgemm_peak_gflops(spec["threads"])
    flops = 2 * B * weights / 4  # a multiply-add per weight and row (attention is ~1% more)
    emit(
        {
            "decode_ms": [
                [v[0], statistics.median(t)] for v, t in zip(variants, times, strict=True)
            ]
            + extra["decode_ms"],
            "sampling_ms": extra["sampling_ms"],
            "bandwidth_gbs": bandwidth,
            "copy_mb": copy_mb * 2**20 / 1e6,
            "weights_mb": weights / 1e6,
            "kv_mb": kv / 1e6,
            "step_mb": (weights + kv) / 1e6,
            "bound_ms": (weights + kv) / (bandwidth * 1e9) * 1000,
            "sgemm_gflops": gflops,
            "step_gflop": flops / 1e9,
            "compute_bound_ms": flops / (gflops * 1e9) * 1000,
        }
    )


def decode_cases(B: int, P: int, N: int) -> list[tuple[str, Any]]:
    """Decode steps of our GPT at the same shape: the head as the weight's transposed view
    (before) or a contiguous copy (now), and an int8 copy (``quantize_dynamic``, FlashRL's
    route, through the modules' forward, against the float32 forward); and one sampling
    draw from 8 x 50,257 logits, by inverse CDF (now) and by an exponential race (before).
    """
    import copy

    import torch

    from mlharness.lm.model import (
        GPT,
        GPTConfig,
        KVCache,
        _exponential_race,
        int8_weights,
        packed_weights,
        plain_decode_step,
        sample_next_token,
    )

    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=12, n_head=12, n_embd=768, vocab_size=VOCAB, dropout=0.0)
    model = GPT(cfg).eval()
    quantize = torch.ao.quantization.quantize_dynamic
    int8 = quantize(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    copied = model.plain_weights()
    view = copied._replace(head_t=model.lm_head.weight.detach().t())
    packed = packed_weights(copied, B)
    int8_plain = int8_weights(copied)
    prompt = torch.randint(3, 49, (B, P), generator=torch.Generator().manual_seed(0))
    logits = torch.randn(B, VOCAB, generator=torch.Generator().manual_seed(0)) * 3
    gen = torch.Generator().manual_seed(0)

    def steps(step: Any) -> float:
        cache = KVCache(cfg, B)
        out = step(prompt, cache)
        t = time.perf_counter()
        for _ in range(N):
            out = step(out.argmax(-1, keepdim=True), cache)
        return (time.perf_counter() - t) / N * 1000

    def draws(draw: Any) -> float:
        t = time.perf_counter()
        for _ in range(N):
            draw()
        return (time.perf_counter() - t) / N * 1000

    weights = torch.exp(logits - logits.amax(-1, keepdim=True))
    cases: list[tuple[str, Any]] = [
        (
            "our GPT: plain path, oneDNN-packed weights (rollouts now)",
            lambda: steps(lambda ids, c: plain_decode_step(ids, c, packed)),
        ),
        (
            "our GPT: plain path, int8 weights (int8 rollouts)",
            lambda: steps(lambda ids, c: plain_decode_step(ids, c, int8_plain)),
        ),
        (
            "our GPT: plain path, head a contiguous copy (mlx sample)",
            lambda: steps(lambda ids, c: plain_decode_step(ids, c, copied)),
        ),
        (
            "our GPT: plain path, head the weight's view (before)",
            lambda: steps(lambda ids, c: plain_decode_step(ids, c, view)),
        ),
        (
            "our GPT: modules' forward, float32",
            lambda: steps(lambda ids, c: model(ids, kv_cache=c)[0][:, -1]),
        ),
        (
            "our GPT: modules' forward, int8 (quantize_dynamic)",
            lambda: steps(lambda ids, c: int8(ids, kv_cache=c)[0][:, -1]),
        ),
        (
            "sampling: inverse CDF (now)",
            lambda: draws(lambda: sample_next_token(logits, generator=gen)),
        ),
        (
            "sampling: exponential race (before)",
            lambda: draws(lambda: _exponential_race(weights, gen)),
        ),
    ]
    return cases


def decode_variants(B: int, P: int, N: int) -> dict[str, list[list[Any]]]:
    """:func:`decode_cases`, medians over 3 alternated rounds after a warm-up round."""
    import statistics

    import torch

    cases = decode_cases(B, P, N)
    times: list[list[float]] = [[] for _ in cases]
    with torch.inference_mode():
        for r in range(4):  # round 0 warms up
            for i, (_, run) in enumerate(cases):
                ms = run()
                if r:
                    times[i].append(ms)
    rows = [[label, statistics.median(t)] for (label, _), t in zip(cases, times, strict=True)]
    return {"decode_ms": rows[:-2], "sampling_ms": rows[-2:]}


CHILD_MODES = {
    "setup": child_setup,
    "trl-train": child_trl_train,
    "profile": child_profile,
    "decode": child_decode,
}


# --------------------------------------------------------------------------- summary, main


def summarise(summary: Summary, train: dict[str, list[Any]]) -> None:
    def runs(key: str) -> list[Any]:
        return [r for r in train.get(key, []) if "error" not in r]

    for mode in ("full", "lora"):
        ours, trl = runs(f"{mode}/ours"), runs(f"{mode}/trl")
        aims(summary, mode, ours, trl)
        summary.add(
            f"{mode}: s/step (median)",
            across(ours, "s_per_step"),
            across(trl, "s_per_step"),
            digits=2,
        )
        nodrop = runs(f"{mode}/trl-nodrop")
        if nodrop:
            o, t = across(ours, "steps_per_sec"), across(nodrop, "steps_per_sec")
            summary.add(f"{mode}: steps/s vs TRL, dropout off", o, t, digits=4)
        summary.add(
            f"{mode}: generation share (%)",
            grpo._pct(across(ours, "generation_share")),
            grpo._pct(across(trl, "generation_share")),
            digits=0,
            show_ratio=False,
        )
        int8 = runs(f"{mode}/ours-int8")
        if int8:
            aims(summary, f"{mode}, int8 rollouts", int8, trl)
            summary.add(
                f"{mode}, int8 rollouts: mean importance weight; truncated (%)",
                across(int8, "is_weight"),
                grpo._pct(across(int8, "is_truncated")),
                digits=3,
                show_ratio=False,
            )


def aims(summary: Summary, label: str, ours: list[Any], trl: list[Any]) -> None:
    """The issue's two aims for one of our setups: steps/s and peak memory against TRL's."""
    for key, name, digits, aim, better in (
        ("steps_per_sec", "steps/s vs TRL default", 4, MIN_STEPS_RATIO, 1),
        ("peak_rss_mb", "peak RSS (MB)", 0, MAX_RSS_RATIO, -1),
    ):
        o, t = across(ours, key), across(trl, key)
        r = grpo.ratio(o, t)
        summary.add(
            f"{label}: {name}",
            o,
            t,
            digits=digits,
            target=f"{'>=' if better > 0 else '<='} {aim:g}x",
            met=None if r is None else better * (r - aim) >= 0,
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="GRPO at a GPT-2-small shape, full and LoRA, against TRL's GRPOTrainer."
    )
    parser.add_argument(
        "--steps", type=int, default=4, help="GRPO steps per run, the first left out (default 4)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of runs (default 1)")
    parser.add_argument(
        "--profile-steps", type=int, default=2, help="timed steps in the profile (default 2)"
    )
    parser.add_argument(
        "--only",
        type=section_parser(SECTIONS),
        metavar="SECTIONS",
        help=f"comma-separated sections (default all): {','.join(SECTIONS)}",
    )
    parser.add_argument("--skip-trl", action="store_true", help="measure only our side")
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="where ours trains (default cpu)"
    )
    parser.add_argument("--json", metavar="OUT", help="also write every figure to OUT as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--_child", nargs=2, metavar=("MODE", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("threads", "repeats", "profile_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.steps < 2:
        parser.error("--steps must be at least 2: the first step is a warm-up")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    global DEVICE
    args = parse_args(argv)
    DEVICE = args.device
    if args._child:
        mode, spec = args._child
        CHILD_MODES[mode](json.loads(spec))
        return 0
    sections = args.only or list(SECTIONS)
    trl = not args.skip_trl and importlib.util.find_spec("trl") is not None
    started = time.perf_counter()
    title = "mlharness GRPO at GPT-2-small size against TRL's GRPOTrainer"
    machine = print_header(title, grpo.versions())
    if not trl:
        say(grpo.TRL_MISSING if not args.skip_trl else "--skip-trl: only our side runs.")
    work = Path(tempfile.mkdtemp(prefix="mlx-grpo-large-"))
    figures: dict[str, Any] = {
        **machine,
        "settings": vars(args) | {"lora": LORA},
        "sections": {},
    }
    done = figures["sections"]
    try:
        rows = grpo.problems(grpo.NUM_PROMPTS)
        (work / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        setup = child("setup", {"model": str(work / "model")}, work, args.threads)
        if not setup.ok:
            say(f"building the model failed:\n{setup.tail(25)}")
            return 1
        say(f"model: {setup.result()['parameters']:,} parameters; scratch directory {work}")
        if "train" in sections:
            done["train"] = section_train(work, args.steps, args.threads, args.repeats, trl)
        if "profile" in sections:
            done["profile"] = section_profile(work, args.threads, args.profile_steps)
        if "decode" in sections:
            done["decode"] = section_decode(work, args.threads)
    finally:
        if args.keep:
            say(f"scratch directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if "train" in done:
        summary = Summary()
        summarise(summary, done["train"])
        summary.print()
    finish(figures, started, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
