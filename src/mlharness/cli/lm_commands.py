"""``mlx prepare | train | sample | loop``: the language-model playground (seed 001).

Each command loads the experiment's config (package and experiment defaults, the file,
``MLX_OVERRIDES``, ``--set``) and calls :mod:`mlharness.lm.engine`, which says what was done;
``mlx train`` on another kind's config (GRPO's, seed 002) goes to that kind's engine. torch
is imported only when a command actually trains or samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlharness.cli import app
from mlharness.cli.options import DryRunOption, FreshOption, SetOption, StrictOption, echo_json
from mlharness.errors import ConfigValidationError

if TYPE_CHECKING:
    from mlharness.lm.config import LMConfig

ExperimentArg = Annotated[
    str | None,
    typer.Argument(
        help="Experiment name (e.g. shakespeare_char); default: the config's `name`.",
        show_default=False,
    ),
]
LMConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Experiment config (.toml, .json, .yaml); default: the experiment's defaults.",
        metavar="PATH",
        show_default=False,
    ),
]
InputOption = Annotated[
    Path | None,
    typer.Option(
        "--input",
        help="Local source text file (instead of a download, or for user-provided data).",
        metavar="PATH",
        show_default=False,
    ),
]


SampleRunDirOption = Annotated[
    Path | None,
    typer.Option(
        "--run-dir",
        help="Run to sample (default: the latest with a checkpoint).",
        metavar="PATH",
        show_default=False,
    ),
]
SampleCheckpointOption = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="Checkpoint directory (default: best, else last).",
        metavar="PATH",
        show_default=False,
    ),
]
TopPOption = Annotated[
    float | None,
    typer.Option(
        help="Nucleus sampling: the likeliest tokens holding this much probability.",
        show_default=False,
    ),
]


def _config(
    config: Path | None, experiment: str | None, set_items: list[str] | None, strict: bool
) -> LMConfig:
    from mlharness.lm.config import load_lm_config

    return load_lm_config(config, experiment, set_items=set_items or [], strict=strict)


@app.command("prepare", short_help="Prepare an lm experiment's token data.")
def prepare(
    experiment: ExperimentArg = None,
    config: LMConfigOption = None,
    input_path: InputOption = None,
    set_items: SetOption = None,
    strict: StrictOption = False,
) -> None:
    """Tokenize the experiment's text into train.bin, val.bin and meta.json."""
    from mlharness.lm import runner
    from mlharness.lm.engine import report_prepare

    cfg = _config(config, experiment, set_items, strict)
    report_prepare(runner.prepare(cfg, input_path))


@app.command("train", short_help="Train (or resume) a GPT on prepared data.")
def train(
    experiment: ExperimentArg = None,
    config: LMConfigOption = None,
    fresh: FreshOption = False,
    dry_run: DryRunOption = False,
    set_items: SetOption = None,
    strict: StrictOption = False,
) -> None:
    """Train a GPT, or run GRPO when the config is an rl one; resumes the experiment's latest
    unfinished run unless --fresh.

    Under `torchrun --nproc_per_node=N` the same command trains a GPT with
    DistributedDataParallel.
    """
    from mlharness.cli.engines import file_kind
    from mlharness.lm import runner
    from mlharness.lm.engine import train_and_report

    kind = "lm" if config is None else file_kind(config, "lm")
    if kind != "lm":
        if experiment is not None:
            raise typer.BadParameter(
                f"{kind} configs name their experiment themselves: drop the EXPERIMENT argument."
            )
        _train_other(kind, config, fresh, dry_run, set_items, strict)
        return
    cfg = _config(config, experiment, set_items, strict)
    runner.check_paths(cfg)
    if dry_run:
        _dry_run(cfg, runner.plan(cfg, sample=False)[1:])
        return
    if train_and_report(cfg, fresh).status == "interrupted":
        raise typer.Exit(130)


def _train_other(
    kind: str,
    config: Path | None,
    fresh: bool,
    dry_run: bool,
    set_items: list[str] | None,
    strict: bool,
) -> None:
    """`mlx train` on a config of another kind (GRPO's, seed 002): its engine trains it."""
    from mlharness.cli.engines import engine

    assert config is not None
    chosen = engine(kind)
    cfg = chosen.load(config, set_items or [], strict)
    if dry_run:
        chosen.check(cfg)
        _dry_run(cfg, chosen.plan(cfg))
        return
    if chosen.train(cfg, fresh=fresh) == "interrupted":
        raise typer.Exit(130)


def _dry_run(cfg: Any, plan: list[str]) -> None:
    echo_json("Configuration:", cfg.model_dump(mode="json"))
    typer.echo("Plan:")
    for line in plan:
        typer.echo(f"  {line}")
    typer.echo("Dry run: nothing was trained or written.")


@app.command("sample", short_help="Generate text from a trained run.")
def sample(
    experiment: ExperimentArg = None,
    config: LMConfigOption = None,
    run_dir: SampleRunDirOption = None,
    checkpoint: SampleCheckpointOption = None,
    num_samples: Annotated[
        int | None, typer.Option(min=1, help="Samples to draw.", show_default=False)
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(min=1, help="Tokens to generate per sample.", show_default=False)
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(help="Softmax temperature (< 1: safer, > 1: wilder).", show_default=False),
    ] = None,
    top_k: Annotated[
        int | None,
        typer.Option(min=1, help="Sample among the k likeliest tokens only.", show_default=False),
    ] = None,
    top_p: TopPOption = None,
    start: Annotated[
        str | None, typer.Option(help="Prompt text, or FILE:path.", show_default=False)
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the sampling RNG.", show_default=False)
    ] = None,
    set_items: SetOption = None,
    strict: StrictOption = False,
) -> None:
    """Sample from the best checkpoint (else the last) of the experiment's latest run.

    Options override the config's [sample] section.
    """
    from mlharness.lm.engine import sample_and_report

    options = {
        "num_samples": num_samples,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "start": start,
        "seed": seed,
    }
    cfg = _sample_config(config, experiment, options, set_items, strict)
    if start is not None:
        cfg.sample.start = start
    sample_and_report(cfg, run_dir, checkpoint)


def _sample_config(
    config: Path | None,
    experiment: str | None,
    options: dict[str, Any],
    set_items: list[str] | None,
    strict: bool,
) -> LMConfig:
    """The config with the sampling flags as ``sample.*`` overrides; an invalid value names
    the flag the user typed, not only the key."""
    given = {k: v for k, v in options.items() if v is not None and k != "start"}
    extra = [f"sample.{k}={v}" for k, v in given.items()]
    try:
        return _config(config, experiment, [*(set_items or []), *extra], strict)
    except ConfigValidationError as exc:
        flags = {f"'sample.{k}'": f"--{k.replace('_', '-')} {v}" for k, v in given.items()}
        raise ConfigValidationError([_typed(p, flags) for p in exc.problems]) from None


def _typed(problem: str, flags: dict[str, str]) -> str:
    """``Invalid value for 'sample.temperature' (--temperature 0): ...`` for a flag's value."""
    for key, flag in flags.items():
        if key in problem:
            return problem.replace(key, f"{key} ({flag})", 1)
    return problem


@app.command("loop", short_help="Prepare (if needed), train, then sample.")
def loop(
    experiment: ExperimentArg = None,
    config: LMConfigOption = None,
    input_path: InputOption = None,
    fresh: FreshOption = False,
    set_items: SetOption = None,
    strict: StrictOption = False,
) -> None:
    """Prepare unless the data is current, train (resuming), and sample from the result."""
    from mlharness.lm.engine import loop as run_loop

    cfg = _config(config, experiment, set_items, strict)
    if run_loop(cfg, input_path, fresh) == "interrupted":
        raise typer.Exit(130)


ExportSourceArg = Annotated[
    Path,
    typer.Argument(
        help="A run directory, an experiment's directory of runs (its newest trained run), "
        "or a checkpoint directory.",
        metavar="RUN_DIR|CHECKPOINT",
        show_default=False,
    ),
]
ExportFormatOption = Annotated[
    str,
    typer.Option(
        "--format",
        help="hf: a transformers directory (our GPT as GPT-2); gguf: a llama.cpp/Ollama "
        "model file.",
        metavar="hf|gguf",
        show_default=False,
    ),
]
ExportOutOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="Directory to write (default: RUN_DIR/export/FORMAT-DTYPE-CHECKPOINT).",
        metavar="DIR",
        show_default=False,
    ),
]
ExportCheckpointOption = Annotated[
    str | None,
    typer.Option(
        "--checkpoint",
        help="best, last, or a checkpoint's name or path (default: best, else last).",
        metavar="best|last|NAME",
        show_default=False,
    ),
]
ExportDtypeOption = Annotated[
    str,
    typer.Option(
        "--dtype",
        help="float32, float16 or bfloat16; gguf also q8_0 (8-bit, llama.cpp's Q8_0).",
        metavar="DTYPE",
    ),
]
AdapterOnlyOption = Annotated[
    bool,
    typer.Option(
        "--adapter-only",
        help="Runs with LoRA on a Hugging Face model (lm or GRPO): the PEFT adapter "
        "directory instead of the merged model.",
    ),
]


@app.command(
    "export", short_help="Export a trained model for transformers (hf) or llama.cpp (gguf)."
)
def export(
    source: ExportSourceArg,
    fmt: ExportFormatOption,
    out: ExportOutOption = None,
    checkpoint: ExportCheckpointOption = None,
    dtype: ExportDtypeOption = "float32",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
    ema: Annotated[
        bool, typer.Option("--ema/--no-ema", help="Export the EMA weights when the run kept them.")
    ] = True,
    adapter_only: AdapterOnlyOption = False,
) -> None:
    """Write a trained model with its tokenizer: an lm run's model (our GPT or a fine-tuned
    Hugging Face model, LoRA merged), or the policy a GRPO run trained, as a Hugging Face
    directory (GPT-2 for our GPT) or a GGUF file."""
    from mlharness.cli.engines import run_kind
    from mlharness.lm import export as lm_export

    lm_export.check_options(fmt, dtype, adapter_only)
    run_dir, chosen = lm_export.locate(source, checkpoint)
    options: dict[str, Any] = {"out": out, "dtype": dtype, "force": force}
    if run_kind(run_dir, None) == "rl":
        from mlharness.rl.export import export as rl_export

        rl_export(chosen, fmt, adapter_only=adapter_only, **options)
    else:
        lm_export.export(chosen, fmt, ema=ema, adapter_only=adapter_only, **options)


@app.command("lit", short_help="Serve LIT (the Learning Interpretability Tool) on an lm run.")
def lit(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="A trained lm run, or an experiment's directory (its newest trained run).",
            show_default=False,
        ),
    ],
    checkpoint: Annotated[
        str | None,
        typer.Option(
            help="Checkpoint name or path (default: best, else last).", show_default=False
        ),
    ] = None,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port on 127.0.0.1; 0 picks a free one.")
    ] = 0,
    examples: Annotated[
        int, typer.Option(min=1, help="Passages of the validation split to load.")
    ] = 64,
) -> None:
    """Serve LIT on the run's GPT and passages of its validation text until Ctrl+C.

    LIT lives in its own environment: 'make lit-env' creates .venv-lit (docs/lit.md).
    """
    import importlib.util

    from mlharness.errors import MlxError

    if importlib.util.find_spec("lit_nlp") is None:
        raise MlxError(
            "LIT (lit-nlp) is not installed in this environment: run 'make lit-env', then "
            "'make lit RUN=<run dir>' or '.venv-lit/bin/mlx lit <run dir>' (docs/lit.md)."
        )
    from mlharness.lm.lit import serve

    serve(run_dir, checkpoint=checkpoint, port=port, examples=examples)
    raise typer.Exit(130)  # only Ctrl+C ends serving
