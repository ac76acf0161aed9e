"""``mlx export``: a trained GPT as a Hugging Face GPT-2 directory or a llama.cpp GGUF file.

Our GPT computes what transformers' ``GPT2LMHeadModel`` computes with
``activation_function="gelu"`` (the exact erf GELU our MLP uses), so the export is a
renaming: GPT-2's Conv1D layers store each Linear weight transposed, ``lm_head`` is tied
to ``wte``, and a model trained with ``bias = false`` gets zero biases, which GPT-2 and
llama.cpp require. The tokenizer travels with the weights (:mod:`.export_tokenizer`).
A LoRA run of our GPT exports with its adapters merged into the base; a run that
fine-tuned a Hugging Face model keeps that model's layout (:mod:`.export_hf`).

The output is built in a hidden sibling directory and renamed into place, so an
interrupted export never leaves a half directory under the name asked for, and an existing
one is replaced only with ``force``. torch, tokenizers and gguf load only when writing.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlharness.errors import CheckpointError, ConfigError, RunDirectoryError
from mlharness.lm.export_weights import (
    Source,
    full_state,
    hf_config,
    hf_state,
    merged_state,
    model_name,
)
from mlharness.runs import checkpoints as run_ckpt
from mlharness.runs.io import atomic_directory, atomic_write_json

if TYPE_CHECKING:
    import torch

    from mlharness.lm.tokenizers import Tokenizer

FORMATS = ("hf", "gguf")
DTYPES = {
    "hf": ("float32", "float16", "bfloat16"),
    "gguf": ("float32", "float16", "bfloat16", "q8_0"),
}


@dataclass
class ExportResult:
    out: Path
    checkpoint: Path
    format: str
    dtype: str


# ----------------------------------------------------------------------------- what to export


def check_options(fmt: str, dtype: str, adapter_only: bool = False) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown export format '{fmt}': use --format hf or --format gguf.")
    if adapter_only and fmt != "hf":
        raise ConfigError(
            "--adapter-only writes a PEFT adapter directory, a Hugging Face format: use it "
            "with --format hf."
        )
    if dtype == "q8_0" and fmt != "gguf":
        raise ConfigError(
            "--dtype q8_0 is a GGUF quantization: use it with --format gguf, or export "
            f"--format {fmt} as {', '.join(DTYPES[fmt])}."
        )
    if dtype not in DTYPES[fmt]:
        raise ConfigError(
            f"Unknown --dtype '{dtype}' for --format {fmt}: use one of {', '.join(DTYPES[fmt])}."
        )


def locate(source: Path, checkpoint: str | None = None) -> tuple[Path, Path]:
    """(run directory, checkpoint directory) for a run, an experiment's runs, or a checkpoint.

    A run's default is ``mlx sample``'s choice, the best checkpoint, else the last; a run
    that holds only its initial checkpoint (step 0, random weights) is refused unless that
    checkpoint is named.
    """
    if not source.exists():
        raise CheckpointError(
            f"There is no run or checkpoint at {source}: pass a run directory "
            "(runs/EXPERIMENT/STAMP) or one of its checkpoints (…/checkpoints/ckpt_*)."
        )
    if (source / run_ckpt.META_FILE).is_file():
        if checkpoint is not None:
            raise ConfigError(
                f"{source} is a checkpoint already, so --checkpoint has nothing to choose: "
                "drop it, or pass the run directory instead."
            )
        return source.resolve().parent.parent, source
    run_dir = source if (source / "checkpoints").is_dir() else _newest_run(source)
    directory = run_dir / "checkpoints"
    if checkpoint not in (None, "best", "last"):
        return run_dir, _named(directory, checkpoint)
    chosen = _pick(directory, checkpoint)
    if chosen.iter == 0 and any(c.iter > 0 for c in run_ckpt.list_checkpoints(directory)):
        raise CheckpointError(  # GRPO's best can be its baseline: nothing improved on it
            f"The {chosen.kind} checkpoint of run {run_dir} is its initial one "
            f"({chosen.path.name}, step 0, before any training): pass --checkpoint last for "
            f"the trained weights, or --checkpoint {chosen.path.name} to export it anyway."
        )
    if chosen.iter == 0:
        raise CheckpointError(
            f"Run {run_dir} has not trained yet: its newest checkpoint {chosen.path.name} is "
            "the initial one (step 0, random weights). Train it first with 'mlx train', or "
            f"export that checkpoint on purpose with --checkpoint {chosen.path.name}."
        )
    return run_dir, chosen.path


def _newest_run(parent: Path) -> Path:
    """An experiment's directory of runs: its newest trained run, saying which it skipped."""
    run_dir, skipped = run_ckpt.newest_trained_run(parent)
    if run_dir is None:  # not an experiment's runs (or none trained): nothing to warn about
        raise CheckpointError(
            f"No trained checkpoint under {parent}: pass a run directory that holds "
            "checkpoints/ (train one first with 'mlx train'), or a checkpoint directory."
        )
    for passed, why in skipped:
        warnings.warn(
            f"Skipped run {passed.name}: {why}; taking {run_dir.name}.", UserWarning, stacklevel=3
        )
    return run_dir


def _pick(directory: Path, which: str | None) -> run_ckpt.CheckpointInfo:
    if which is None:
        return run_ckpt.pick_for_sampling(directory)
    found = run_ckpt.list_checkpoints(directory, which)
    if not found:
        other = "last" if which == "best" else "best"
        raise CheckpointError(
            f"No ckpt_{which}_* checkpoint in {directory}: use --checkpoint {other}, or name "
            "one of its checkpoints."
        )
    return found[-1]


def _named(directory: Path, name: str) -> Path:
    for candidate in (directory / name, Path(name)):
        if (candidate / run_ckpt.META_FILE).is_file():
            return candidate
    names = ", ".join(c.path.name for c in run_ckpt.list_checkpoints(directory)) or "none"
    raise CheckpointError(
        f"No checkpoint '{name}' in {directory}: use best, last, or one of: {names}."
    )


def default_out(run_dir: Path, checkpoint: Path, fmt: str, dtype: str) -> Path:
    """``RUN_DIR/export/<format>-<dtype>-<checkpoint>``: beside the run it came from."""
    return run_dir / "export" / f"{fmt}-{dtype}-{checkpoint.name}"


def check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise RunDirectoryError(f"--out {out} is a file: name a directory to export into.")
    if out.exists() and not force:
        raise RunDirectoryError(
            f"{out} already exists: pass --force to replace it, or choose another --out."
        )


# ----------------------------------------------------------------------------- export


def export(
    source: Path,
    fmt: str,
    *,
    out: Path | None = None,
    checkpoint: str | None = None,
    dtype: str = "float32",
    force: bool = False,
    ema: bool = True,
    adapter_only: bool = False,
    say: Callable[[str], None] = print,
) -> ExportResult:
    """Write ``source``'s checkpoint as ``fmt`` into ``out`` (default: under the run)."""
    from mlharness.lm import export_hf

    check_options(fmt, dtype, adapter_only)
    run_dir, ckpt_dir = locate(source, checkpoint)
    src = read_source(run_dir, ckpt_dir)
    args = src.meta["model_args"]
    export_hf.check_lm_run(args, src.meta["config"].get("init_from", ""), fmt, adapter_only)
    what = "adapter" if adapter_only else fmt
    out = out if out is not None else default_out(run_dir, ckpt_dir, what, dtype)
    check_out(out, force)
    from mlharness.lm.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(src.tokenizer_dir)
    use_ema = ema and bool(src.meta.get("has_ema"))
    weights = "EMA weights" if use_ema else "weights"
    if args.get("lora"):
        weights = "LoRA adapters" if adapter_only else "LoRA merged into the base"
    say(
        f"Exporting {ckpt_dir} (iteration {src.meta['iter']}, {weights}) as {what} {dtype} "
        f"to {out} ..."
    )
    with atomic_directory(out) as tmp:
        if "hf_config" in args:
            export_hf.write_lm_run(tmp, src, tokenizer, fmt, dtype, adapter_only)
        else:
            write_gpt(tmp, src, tokenizer, fmt, dtype, use_ema)
    say(f"Exported: {out}")
    return ExportResult(out, ckpt_dir, what, dtype)


def write_gpt(
    directory: Path, src: Source, tokenizer: Tokenizer, fmt: str, dtype: str, ema: bool
) -> None:
    """Our GPT as GPT-2 (hf) or GGUF; a LoRA run's adapters merged into its base first."""
    from mlharness.lm import checkpoints as lm_ckpt

    args = src.meta["model_args"]
    if args.get("lora"):
        import torch

        from mlharness.lm.sampler import load_model

        state = merged_state(load_model(src.checkpoint, torch.device("cpu"), ema)[0])
    else:
        state = lm_ckpt.load_weights(src.checkpoint, ema=ema)
    state = full_state(state, args)
    if fmt == "hf":
        write_hf(directory, state, args, tokenizer, dtype)
    else:
        from mlharness.lm.export_gguf import write_gguf

        write_gguf(directory, state, args, tokenizer, dtype, model_name(src.run_dir))


def read_source(run_dir: Path, checkpoint: Path) -> Source:
    """The checkpoint's record, checked, and the directory of its ``meta.json``.

    An rl checkpoint of our GPT keeps ``meta.json`` itself; an lm checkpoint's is in its
    run directory.
    """
    from mlharness.lm import checkpoints as lm_ckpt

    meta = lm_ckpt.read_meta(checkpoint)
    for candidate in (checkpoint, run_dir):
        if (candidate / "meta.json").is_file():
            return Source(run_dir, checkpoint, meta, candidate)
    raise CheckpointError(
        f"Run {run_dir} has no meta.json, so its tokenizer is unknown. Copy the meta.json "
        "(and tokenizer.json) of the data the run was trained on into it."
    )


# ----------------------------------------------------------------------------- Hugging Face


def write_hf(
    directory: Path,
    state: dict[str, torch.Tensor],
    args: dict[str, Any],
    tokenizer: Tokenizer,
    dtype: str,
) -> None:
    """config.json, generation_config.json, model.safetensors and the tokenizer files."""
    from safetensors.torch import save_file

    from mlharness.lm.export_tokenizer import save_hf_tokenizer

    eos = save_hf_tokenizer(directory, tokenizer, int(args["block_size"]))
    save_file(hf_state(state, dtype), str(directory / "model.safetensors"), {"format": "pt"})
    atomic_write_json(directory / "config.json", hf_config(args, eos, dtype))
    atomic_write_json(
        directory / "generation_config.json",
        {"bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos},
    )
