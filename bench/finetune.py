"""Benchmark LoRA fine-tuning through ``mlx train`` against TRL's ``SFTTrainer``, side by side.

Run it from the repository root with the project's virtual environment::

    .venv/bin/python bench/finetune.py                       # 8 steps a side, ~6 minutes
    .venv/bin/python bench/finetune.py --steps 4             # a quick look
    .venv/bin/python bench/finetune.py --repeats 2 --json finetune.json
    .venv/bin/python bench/finetune.py --profile 3           # and where our step time goes

TRL is a bench-only extra (``pip install "mlharness[bench]"``). Without it, only our side
runs and the TRL column shows the issue's reference figures, marked ``*``.

The task, the same on both sides: a random GPT-2-small-shaped Hugging Face model (12 layers,
768 wide, 12 heads, 1,024 positions, GPT-2's 50,257-token vocabulary, dropout 0) saved to a
scratch directory with a byte-level BPE tokenizer of 2,048 tokens trained on the corpus (the
text only feeds the data: ids stay below 2,048, the model keeps GPT-2's vocabulary so that its
LM head and logits, a third of the weights and the largest tensors of a step, are GPT-2's).
``mlx prepare`` tokenizes tiny Shakespeare once (``tokenizer = "hf:PATH"``); both sides train
on the same 257-token windows of its ``train.bin`` in the same order: the windows our trainer
draws from its seeded generator, written out for TRL as a pre-tokenized dataset that TRL reads
in order (``train_sampling_strategy="sequential"``). Each window gives 256 next-token targets
on both sides (ours: 256 inputs and 256 targets; TRL: the 257 tokens as ``input_ids``, which
the model shifts). LoRA r 16, alpha 32, dropout 0 on ``c_attn``, ``c_proj`` and ``c_fc``
(GPT-2's Conv1D layers, ``fan_in_fan_out``), TRL starting from our run's initial adapters (its
``ckpt_last_00000000``), so that the two loss curves can agree step for step. Batch 8 x 256,
float32, no gradient checkpointing, constant learning rate 2e-4, AdamW (0.9, 0.999), no weight
decay, clipping at 1.0, ``--threads`` torch threads and ``OMP_WAIT_POLICY=PASSIVE`` on both.
TRL: ``report_to="none"``, ``save_strategy="no"``; ours: one metrics record a step and one
evaluation batch per split at the end.

Figures: tokens/s of the median step after the first (warm-up) and its 10th percentile
(tokens fed to the model: 8 x 256 ours, 8 x 257 TRL's); the loss of every step on both sides
and their largest difference; each process's peak RSS (the larger of the polled tree RSS and
``ru_maxrss``) and wall time. ``--profile N`` then times N of our steps in-process with
``torch.profiler`` and lists the operators with the most time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grpo import Summary, across, bench_env  # bench/ is on sys.path
from lm import TEXT
from report import (
    ChildRun,
    add_common_options,
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
    versions,
)

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MLX = Path(PYTHON).with_name("mlx")

# The task, the same on both sides.
MODEL_SHAPE: dict[str, Any] = {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024}
MODEL_VOCAB = 50257  # GPT-2's
TOKENIZER_VOCAB = 2048
BATCH = 8
BLOCK = 256  # targets per row
LORA: dict[str, Any] = {
    "r": 16,
    "alpha": 32.0,
    "dropout": 0.0,  # no random draws: the two loss curves can agree step for step
    "target_modules": ["c_attn", "c_proj", "c_fc"],  # our default for GPT-2
}
LEARNING_RATE = 2e-4
SEED = 1337
WARMUP_STEPS = 1  # steps left out of the medians
EOS = "<|endoftext|>"

# Targets from the issue.
MIN_TOKENS_RATIO = 1.4
MAX_MEMORY_RATIO = 1.0

# The issue's figures for this machine (batch 8 x 256, float32), shown (marked "*") when TRL
# is not measured.
ISSUE_REFERENCE: dict[str, float] = {"tokens_per_sec": 128.0, "peak_rss_mb": 7300.0}

RUN_DIR_LINE = "Run directory: "
TRL_STEP_LINE = "trl step "
TRL_MISSING = (
    'TRL is not installed, so only our side runs: pip install "mlharness[bench]" '
    f'(here: {Path(PYTHON).parent / "pip"} install -e ".[bench]") to measure TRL\'s side.'
)


# --------------------------------------------------------------------------- helpers


LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets")


def child(mode: str, spec: dict[str, Any], work: Path, threads: int, **kwargs: Any) -> ChildRun:
    cmd = self_command(__file__, mode, spec)
    return run_child(cmd, cwd=REPO, env=bench_env(work, threads), **kwargs)


def failure(what: str, run: ChildRun) -> dict[str, Any]:
    return {"error": f"{what} failed (exit {run.returncode}):\n{run.tail(25)}"}


def peft_key(name: str) -> str:
    """The name under which our checkpoints keep the adapter that PEFT's model calls ``name``.

    >>> peft_key("base_model.model.transformer.h.0.attn.c_attn.lora_A.default.weight")
    'transformer.h.0.attn.c_attn.lora_A.weight'
    """
    return name.removeprefix("base_model.model.").replace(".default.", ".")


def step_figures(step_s: Sequence[float], tokens_per_step: int) -> dict[str, Any]:
    """Speed from per-step times, the first WARMUP_STEPS left out (when there are more)."""
    k = WARMUP_STEPS if len(step_s) > WARMUP_STEPS else 0
    timed = list(step_s[k:])
    s_step = median(timed)
    p10 = statistics.quantiles(timed, n=10)[0] if len(timed) > 1 else s_step
    return {
        "steps": len(step_s),
        "s_per_step": s_step,
        "s_per_step_p10": p10,
        "tokens_per_sec": tokens_per_step / s_step if s_step else None,
        "tokens_per_sec_p10": tokens_per_step / p10 if p10 else None,
        "sum_step_s": sum(step_s),
        "step_s": list(step_s),
    }


def loss_gap(ours: Sequence[float], theirs: Sequence[float]) -> dict[str, float | int | None]:
    """How far apart two loss curves are over the steps both have."""
    pairs = list(zip(ours, theirs, strict=False))
    if not pairs:
        return {"steps": 0, "max_abs": None, "max_rel": None, "first_abs": None}
    diffs = [abs(a - b) for a, b in pairs]
    return {
        "steps": len(pairs),
        "max_abs": max(diffs),
        "max_rel": max(d / abs(b) for d, (_, b) in zip(diffs, pairs, strict=True) if b),
        "first_abs": diffs[0],
    }


def per_target(losses: Sequence[float], divisor: int) -> list[float]:
    """TRL's losses as means over the BLOCK targets of each row, as ours are.

    transformers divides the summed token losses by its count of labels; for a model whose
    ``loss_type`` it does not know as a causal LM's (GPT-2's is None in 5.25) that count
    includes each row's first label, which nothing predicts: ``divisor`` is 257, not 256.

    >>> per_target([256.0, 2.56], 257)
    [257.0, 2.57]
    """
    return [loss * divisor / BLOCK for loss in losses]


def final_eval_seconds(records: Sequence[tuple[float, dict[str, Any]]]) -> float | None:
    """Our closing evaluation's time: from the last step's record to the evaluation's, as
    the tailer of ``metrics.ndjson`` saw them (each line is flushed as it is logged)."""
    steps = [t for t, r in records if "step_time_ms" in r]
    evals = [t for t, r in records if "val_loss" in r]
    if not steps or not evals or evals[-1] < steps[-1]:
        return None
    return evals[-1] - steps[-1]


# --------------------------------------------------------------------------- setup


def our_config(work: Path, steps: int, threads: int, runs_dir: Path) -> dict[str, Any]:
    """The lm config ``mlx prepare`` and ``mlx train`` run: TRL's settings in our schema."""
    model = work / "model"
    return {
        "name": "finetune_bench",
        "description": "bench/finetune.py: the settings of the TRL side, in our schema.",
        "init_from": f"hf:{model}",
        "prepare": {
            "preparer": "text",
            "input": str(TEXT),
            "data_dir": str(work / "data"),
            "tokenizer": f"hf:{model}",
        },
        "model": {"block_size": BLOCK, "dropout": 0.0},
        "lora": LORA,
        "train": {
            "max_iters": steps,
            "batch_size": BATCH,
            "grad_accum_steps": 1,
            "learning_rate": LEARNING_RATE,
            "min_lr": LEARNING_RATE,
            "warmup_iters": 0,
            "decay_lr": False,  # TRL: lr_scheduler_type="constant"
            "weight_decay": 0.0,  # TrainingArguments' default
            "beta1": 0.9,
            "beta2": 0.999,  # TrainingArguments' adam_beta2
            "grad_clip": 1.0,  # TrainingArguments' max_grad_norm
            "eval_interval": steps,  # one evaluation, at the end
            "eval_iters": 1,
            "log_interval": 1,
            "seed": SEED,
            "device": "cpu",
            "dtype": "float32",
            "num_threads": threads,
            "gradient_checkpointing": False,
            "checkpointing": {"keep": {"last": 2, "best": 0}},  # the initial one stays, for TRL
        },
        "output": {"directory": str(runs_dir)},
    }


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


def setup(work: Path, steps: int, threads: int) -> dict[str, Any]:
    """The model and tokenizer, our prepared data, and the windows both sides train on."""
    if not TEXT.is_file():
        return {"error": f"{TEXT} is missing: the bench trains on tiny Shakespeare from there."}
    say("building the random GPT-2-small model and a 2,048-token BPE tokenizer ...")
    run = child("setup", {"model": str(work / "model"), "text": str(TEXT)}, work, threads)
    if not run.ok:
        return failure("building the model", run)
    config = write_config(work / "prepare.json", our_config(work, steps, threads, work / "runs"))
    say("mlx prepare (the model's tokenizer) ...")
    prep = run_child(
        [str(MLX), "prepare", "--config", str(config)], cwd=REPO, env=bench_env(work, threads)
    )
    if not prep.ok:
        return failure("mlx prepare", prep)
    spec = {"data": str(work / "data"), "steps": steps, "out": str(work / "windows.npy")}
    run = child("windows", spec, work, threads)
    if not run.ok:
        return failure("drawing the windows", run)
    return run.result()


# --------------------------------------------------------------------------- the two sides


def our_train(work: Path, steps: int, threads: int, label: str) -> dict[str, Any]:
    if not MLX.exists():
        return {"error": f"{MLX} not found: install the project first (make dev)."}
    runs_dir = work / f"ours-{label}"
    settings = our_config(work, steps, threads, runs_dir)
    config = write_config(work / f"finetune_bench_{label}.json", settings)
    cmd = [str(MLX), "train", "--config", str(config), "--fresh"]

    def show(_: float, record: dict[str, Any]) -> None:
        if "step_time_ms" in record:
            say(
                f"    ours step {record['iter']}: loss {record['loss']:.6f}, "
                f"{record['step_time_ms'] / 1000:.2f} s"
            )

    run = run_child(cmd, cwd=REPO, env=bench_env(work, threads), tail_dir=runs_dir, on_record=show)
    if not run.ok:
        return failure("mlx train", run)
    run_dir = run.marker(RUN_DIR_LINE)
    if run_dir is None:
        return {"error": f"mlx train printed no run directory:\n{run.tail()}"}
    metrics = Path(run_dir) / "metrics" / "metrics.ndjson"
    records = [json.loads(s) for s in metrics.read_text().splitlines() if s.strip()]
    steps_done = [r for r in records if "step_time_ms" in r]
    out = step_figures([r["step_time_ms"] / 1000 for r in steps_done], BATCH * BLOCK)
    out.update(
        {
            "losses": [float(r["loss"]) for r in steps_done],
            "command": " ".join(["mlx", *cmd[1:]]),
            "config_settings": settings,
            "run_dir": run_dir,
            "init_adapters": str(Path(run_dir) / "checkpoints" / "ckpt_last_00000000"),
            "process_wall_s": run.wall_seconds,
            "outside_steps_s": run.wall_seconds - out["sum_step_s"],
            "final_eval_s": final_eval_seconds(run.records),
            "peak_rss_mb": run.peak_rss_mb,
        }
    )
    return out


def trl_train(
    work: Path, steps: int, threads: int, label: str, init_adapters: str
) -> dict[str, Any]:
    spec = {
        "model": str(work / "model"),
        "windows": str(work / "windows.npy"),
        "init_adapters": init_adapters,
        "output_dir": str(work / f"trl-{label}"),
        "steps": steps,
        "threads": threads,
    }
    run = child("trl", spec, work, threads, echo=lambda line: line.startswith(TRL_STEP_LINE))
    if not run.ok:
        return failure("TRL's SFTTrainer", run)
    res = run.result()
    out = step_figures(res.pop("step_s"), BATCH * (BLOCK + 1))
    out.update(res)
    out["process_wall_s"] = run.wall_seconds
    out["outside_steps_s"] = run.wall_seconds - out["sum_step_s"]
    out["peak_rss_mb"] = run.peak_rss_mb
    return out


def describe_run(name: str, res: dict[str, Any]) -> None:
    if "error" in res:
        say(f"  {name}: {res['error']}")
        return
    say(
        f"  {name}: {fmt(res['s_per_step'], 2)} s/step (p10 {fmt(res['s_per_step_p10'], 2)}), "
        f"{fmt(res['tokens_per_sec'], 1)} tokens/s, process {fmt(res['process_wall_s'], 1)} s "
        f"({fmt(res['outside_steps_s'], 1)} s outside steps), peak RSS "
        f"{fmt(res['peak_rss_mb'], 0)} MB"
    )


def section_train(
    work: Path, steps: int, threads: int, repeats: int, with_trl: bool
) -> dict[str, Any]:
    heading(
        f"Training: {steps} LoRA steps of {BATCH} x {BLOCK} tokens, {threads} thread(s), "
        f"{repeats} round(s), ours then TRL (which starts from our initial adapters)",
        load=True,
    )
    out: dict[str, Any] = {"ours": [], "trl": [], "loss_gap": []}
    for r in range(1, repeats + 1):
        say(f"round {r}: mlx train --config ... ")
        ours = our_train(work, steps, threads, f"r{r}")
        out["ours"].append(ours)
        describe_run("ours", ours)
        if with_trl and "error" not in ours:
            say(f"round {r}: TRL SFTTrainer ...")
            trl = trl_train(work, steps, threads, f"r{r}", ours["init_adapters"])
            out["trl"].append(trl)
            describe_run("TRL ", trl)
            if "error" not in trl:
                trl["losses_per_target"] = per_target(trl["losses"], trl["loss_divisor"])
                out["loss_gap"].append(loss_gap(ours["losses"], trl["losses_per_target"]))
                print_losses(ours["losses"], trl["losses"], trl["losses_per_target"])
    if out["ours"] and "command" in out["ours"][0]:
        say(f"  our command: {out['ours'][0]['command']} (--keep keeps the config)")
    return out


def print_losses(ours: Sequence[float], trl: Sequence[float], trl_mean: Sequence[float]) -> None:
    rows = [
        [str(i + 1), f"{a:.6f}", f"{b:.6f}", f"{c:.6f}", f"{a - c:+.2e}"]
        for i, (a, b, c) in enumerate(zip(ours, trl, trl_mean, strict=False))
    ]
    headers = ["step", "loss, ours", "TRL, as logged", f"TRL, per {BLOCK} targets", "difference"]
    say(table(headers, rows))


# --------------------------------------------------------------------------- child modes


def child_setup(spec: dict[str, Any]) -> None:
    """A random GPT-2-small in ``spec["model"]`` with a BPE tokenizer trained on the text."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train([spec["text"]], trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS, pad_token=EOS)  # type: ignore[no-untyped-call]
    eos = tok.convert_tokens_to_ids(EOS)
    assert isinstance(eos, int)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=MODEL_VOCAB,
        **MODEL_SHAPE,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    model = GPT2LMHeadModel(config)
    model.save_pretrained(spec["model"])
    tok.save_pretrained(spec["model"])
    params = sum(p.numel() for p in model.parameters())
    emit({"parameters": params, "tokenizer_vocab": len(tok)})


def child_windows(spec: dict[str, Any]) -> None:
    """The (steps x BATCH, BLOCK + 1) windows our trainer will train on, in its order.

    The same class and seeded generator as :class:`mlharness.lm.trainer.Trainer` (its
    ``batch_gen``, one ``starts`` call of ``BATCH`` a step when nothing is accumulated).
    """
    import numpy as np
    import torch

    from mlharness.lm.trainer import TokenBatches

    data = Path(spec["data"])
    meta = json.loads((data / "meta.json").read_text(encoding="utf-8"))
    windows = step_windows(
        TokenBatches(data / "train.bin", meta["dtype"], BLOCK, torch.device("cpu")),
        spec["steps"],
    )
    np.save(spec["out"], windows)
    emit({"train_tokens": len(np.memmap(data / "train.bin", dtype=meta["dtype"]))})


def step_windows(batches: Any, steps: int) -> Any:
    """``steps`` batches of whole windows (inputs plus the last target) from ``batches``."""
    import numpy as np
    import torch

    gen = torch.Generator().manual_seed(SEED)
    rows = []
    for _ in range(steps):
        x, y = batches.batch(batches.starts(BATCH, gen))
        rows.append(torch.cat([x, y[:, -1:]], dim=1).numpy())
    return np.concatenate(rows).astype(np.int64)


def child_trl(spec: dict[str, Any]) -> None:
    """TRL's side: what a user's script would do, plus a step timer and the step losses."""
    import resource

    start = time.perf_counter()
    import torch

    torch.set_num_threads(spec["threads"])
    from trl import SFTConfig, SFTTrainer

    imported = time.perf_counter()
    trainer, step_s, losses = _trl_trainer(spec)
    copied = _copy_adapters(trainer.model, spec["init_adapters"])
    ready = time.perf_counter()
    trainer.train()
    done = time.perf_counter()
    emit(
        {
            "step_s": step_s,
            "losses": losses,
            "adapters_copied": copied,
            # transformers' count of a row's labels, the divisor of its summed token losses
            "loss_divisor": BLOCK if getattr(trainer, "_loss_shifts_labels", True) else BLOCK + 1,
            "import_s": imported - start,
            "setup_s": ready - imported,
            "train_s": done - ready,
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads(),
            "dtype": str(next(trainer.model.parameters()).dtype),
            "trainable_parameters": sum(
                p.numel() for p in trainer.model.parameters() if p.requires_grad
            ),
            "optim": str(trainer.args.optim),
            "versions": versions(LIBRARIES),
            "classes": [SFTConfig.__name__, SFTTrainer.__name__],
        }
    )


def _trl_trainer(spec: dict[str, Any]) -> tuple[Any, list[float], list[float]]:
    """SFTTrainer on the windows with our LoRA and optimizer settings, timed and recorded."""
    import numpy as np
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTTrainer

    dataset = Dataset.from_dict({"input_ids": np.load(spec["windows"]).tolist()})
    step_s: list[float] = []
    losses: list[float] = []
    begun: list[float] = []

    class StepTimer(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            begun.append(time.perf_counter())

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step_s.append(time.perf_counter() - begun[-1])
            print(f"{TRL_STEP_LINE}{len(step_s)}: loss {losses[-1]:.6f}, {step_s[-1]:.2f} s")

    class RecordingSFTTrainer(SFTTrainer):  # type: ignore[misc]
        def training_step(self, *args: Any, **kwargs: Any) -> Any:
            loss = super().training_step(*args, **kwargs)  # type: ignore[no-untyped-call]
            losses.append(float(loss))  # TRL logs only every logging_steps (10)
            return loss

    config, peft_config = trl_settings(spec["output_dir"], spec["steps"])
    trainer = RecordingSFTTrainer(
        model=spec["model"],
        args=config,
        train_dataset=dataset,
        peft_config=peft_config,
        callbacks=[StepTimer()],
    )
    return trainer, step_s, losses


def trl_settings(output_dir: str, steps: int) -> tuple[Any, Any]:
    """TRL's SFTConfig and PEFT's LoraConfig with the settings of our generated config."""
    from peft import LoraConfig
    from trl import SFTConfig

    config = SFTConfig(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=1,
        max_length=BLOCK + 1,
        packing=False,
        train_sampling_strategy="sequential",  # the windows in our trainer's order
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        max_grad_norm=1.0,
        seed=SEED,
        use_cpu=True,
        bf16=False,  # TRL's default is bf16 mixed precision; both train in float32
        gradient_checkpointing=False,  # TRL's default recomputes activations; neither does
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    peft_config = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules=LORA["target_modules"],
        bias="none",
        task_type="CAUSAL_LM",
        fan_in_fan_out=True,  # GPT-2's Conv1D, as ours
    )
    return config, peft_config


def _copy_adapters(model: Any, checkpoint: str) -> int:
    """Start TRL's adapters where ours started (PEFT draws lora_A at random; B is zero)."""
    import torch
    from safetensors.torch import load_file

    init = load_file(str(Path(checkpoint) / "model.safetensors"))
    copied = 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(init[peft_key(name)])
                copied += 1
    if copied != len(init):
        raise RuntimeError(f"copied {copied} adapter tensors of the {len(init)} in {checkpoint}")
    return copied


def section_profile(work: Path, steps: int, threads: int, n: int) -> dict[str, Any]:
    heading(f"Profile of our side: {n} steps in-process (after one warm-up), torch.profiler", True)
    config = write_config(
        work / "finetune_bench_profile.json",
        our_config(work, steps, threads, work / "ours-profile"),
    )
    run = child("profile", {"config": str(config), "steps": n}, work, threads)
    if not run.ok:
        res = failure("profiling our trainer", run)
        say(res["error"])
        return res
    res = run.result()
    rows = [[label, fmt(ms, 0), fmt(100 * ms / res["step_ms"], 1)] for label, ms in res["phases"]]
    rows.append(["step (total)", fmt(res["step_ms"], 0), "100.0"])
    say(table(["phase (ours, per step)", "ms", "% of step"], rows))
    say(f"\nOperators with the most self CPU time over {n} steps:\n{res['operators']}")
    return res


def child_profile(spec: dict[str, Any]) -> None:
    """Our trainer's step split into forward, backward and update, then per operator."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from mlharness.lm.config import load_lm_config
    from mlharness.lm.trainer import Trainer

    trainer = Trainer(load_lm_config(Path(spec["config"]), None), fresh=True, progress=False)
    model, data, gen = trainer.model, trainer.train_data, trainer.batch_gen
    phases = {"batch": 0.0, "forward (with the loss)": 0.0, "backward": 0.0, "clip + AdamW": 0.0}

    def step(timed: bool) -> None:
        marks = [time.perf_counter()]
        x, y = data.batch(data.starts(BATCH, gen))
        marks.append(time.perf_counter())
        _, loss = model(x, y)
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        if timed:
            for label, a, b in zip(phases, marks, marks[1:], strict=False):
                phases[label] += b - a

    step(timed=False)  # warm-up
    started = time.perf_counter()
    for _ in range(spec["steps"]):
        step(timed=True)
    total = time.perf_counter() - started
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(spec["steps"]):
            step(timed=False)
    n = spec["steps"]
    emit(
        {
            "step_ms": 1000 * total / n,
            "phases": [[label, 1000 * s / n] for label, s in phases.items()],
            "operators": prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15),
        }
    )


# --------------------------------------------------------------------------- summary


def summarise(summary: Summary, train: dict[str, Any], with_trl: bool) -> None:
    ours = [r for r in train["ours"] if "error" not in r]
    trl = [r for r in train["trl"] if "error" not in r]
    ref = not with_trl

    def theirs(key: str) -> float | None:
        return across(trl, key) if with_trl else ISSUE_REFERENCE.get(key)

    def targeted(figure: str, key: str, digits: int, limit: float, at_least: bool) -> None:
        o, t = across(ours, key), theirs(key)
        r = ratio(o, t)
        summary.add(
            figure,
            o,
            t,
            digits=digits,
            reference=ref,
            target=f"{'>=' if at_least else '<='} {limit:g}x",
            met=None if r is None else (r >= limit if at_least else r <= limit),
        )

    targeted("tokens/s (median step after warm-up)", "tokens_per_sec", 1, MIN_TOKENS_RATIO, True)
    for figure, key, digits in (
        ("tokens/s, 10th percentile step", "tokens_per_sec_p10", 1),
        ("s/step (median)", "s_per_step", 2),
    ):
        summary.add(figure, across(ours, key), theirs(key), digits=digits)
    gaps = [g["max_abs"] for g in train["loss_gap"] if g["max_abs"] is not None]
    if gaps:
        summary.add(
            "loss curve: largest |ours - TRL| over the steps",
            max(gaps),
            None,
            digits=6,
            target="equal curve",
            show_ratio=False,
        )
    targeted("peak RSS (MB)", "peak_rss_mb", 0, MAX_MEMORY_RATIO, False)
    for figure, key in (
        ("process wall time (s)", "process_wall_s"),
        ("  of which outside the steps (s)", "outside_steps_s"),
    ):
        summary.add(figure, across(ours, key), theirs(key), digits=1)
    closing = across(ours, "final_eval_s")
    summary.add("    of which our closing eval (s)", closing, None, digits=1, show_ratio=False)


# --------------------------------------------------------------------------- main


CHILD_MODES = {
    "setup": child_setup,
    "windows": child_windows,
    "trl": child_trl,
    "profile": child_profile,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark LoRA fine-tuning of a random GPT-2-small through mlx train "
        "against TRL's SFTTrainer: tokens/s, loss curves, peak memory, process time.",
    )
    parser.add_argument(
        "--steps", type=int, default=8, help="optimizer steps per run and side (default 8)"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch CPU threads, both sides (default 2)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="training rounds, ours then TRL in each (default 1); medians over rounds",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="then profile N of our steps in-process with torch.profiler (default 0: off)",
    )
    parser.add_argument(
        "--skip-trl", action="store_true", help="measure only our side (as when TRL is missing)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    add_common_options(parser)
    args = parser.parse_args(argv)
    for name in ("steps", "threads", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.steps <= WARMUP_STEPS:
        parser.error(f"--steps must be more than the {WARMUP_STEPS} warm-up step(s)")
    if args.profile < 0:
        parser.error("--profile must be 0 (off) or a number of steps")
    return args


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What was run, for the JSON record."""
    return {
        "steps": args.steps,
        "threads": args.threads,
        "repeats": args.repeats,
        "model": {**MODEL_SHAPE, "vocab_size": MODEL_VOCAB},
        "tokenizer_vocab": TOKENIZER_VOCAB,
        "batch": BATCH,
        "block": BLOCK,
        "lora": LORA,
        "learning_rate": LEARNING_RATE,
        "warmup_steps_ignored": WARMUP_STEPS,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if run_child_mode(args, CHILD_MODES):
        return 0
    with_trl = not args.skip_trl and importlib.util.find_spec("trl") is not None
    started = time.perf_counter()
    machine = print_header(
        "mlharness LoRA fine-tuning benchmark against TRL's SFTTrainer", LIBRARIES
    )
    if not with_trl:
        say(TRL_MISSING if not args.skip_trl else "--skip-trl: only our side runs.")
    work = Path(tempfile.mkdtemp(prefix="mlx-finetune-bench-"))
    say(f"scratch directory: {work}")
    figures: dict[str, Any] = {
        **machine,
        "settings": settings(args),
        "trl_measured": with_trl,
        "issue_reference": ISSUE_REFERENCE,
    }
    try:
        figures["setup"] = setup(work, args.steps, args.threads)
        if "error" in figures["setup"]:
            say(figures["setup"]["error"])
            return 1
        figures["train"] = section_train(work, args.steps, args.threads, args.repeats, with_trl)
        save_json(args.json, figures)
        if args.profile:
            figures["profile"] = section_profile(work, args.steps, args.threads, args.profile)
    finally:
        if args.keep:
            say(f"\nscratch directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    summary = Summary()
    summarise(summary, figures["train"], with_trl)
    summary.print()
    figures["targets"] = summary.targets
    finish(figures, started, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
