"""``mlx prepare | train | sample | loop``: the language-model playground (seed 001).

Each command loads the experiment's config (package and experiment defaults, the file,
``MLX_OVERRIDES``, ``--set``) and calls :mod:`mlharness.lm.runner`. torch is imported only
when a command actually trains or samples.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlharness.cli import app
from mlharness.cli.options import DryRunOption, SetOption, StrictOption, echo_json
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
FreshOption = Annotated[
    bool,
    typer.Option("--fresh", help="Start a new run instead of resuming the latest unfinished one."),
]


def _config(
    config: Path | None, experiment: str | None, set_items: list[str] | None, strict: bool
) -> LMConfig:
    from mlharness.lm.config import load_lm_config

    return load_lm_config(config, experiment, set_items=set_items or [], strict=strict)


def _report_prepare(report: Any) -> None:
    typer.echo(
        f"Prepared {report.train_tokens:,} train and {report.val_tokens:,} val tokens "
        f"(vocabulary {report.vocab_size:,}, {report.dtype}) in {report.data_dir} "
        f"[{report.seconds:.2f} s]"
    )


def _leads() -> bool:
    """Whether this process reports: under torchrun only rank 0 does (it alone writes the run)."""
    return os.environ.get("RANK", "0") == "0"


def _train(cfg: LMConfig, fresh: bool) -> Path:
    from mlharness.lm import runner

    lead = _leads()

    def say(text: str) -> None:
        if lead:
            typer.echo(text)

    say(f"Experiment: {cfg.experiment}")
    result = runner.train(cfg, fresh=fresh)
    if result.resumed_from is not None:
        say(f"Resumed from {result.resumed_from}")
    final = result.final_metrics
    val = final.get("val_loss")
    say(
        f"Training {result.status} at iteration {result.iterations}"
        + (f": val loss {val:.4f}, best {result.best_val_loss:.4f}" if val is not None else "")
    )
    say(f"Run directory: {result.run_dir}")
    if result.status == "interrupted":
        say("Interrupted: run 'mlx train' again to resume from the last checkpoint.")
        raise typer.Exit(130)
    return result.run_dir


def _sample(cfg: LMConfig, run_dir: Path | None, checkpoint: Path | None) -> None:
    from mlharness.lm import runner

    result = runner.sample(cfg, run_dir=run_dir, checkpoint=checkpoint, out=sys.stdout)
    typer.echo(f"\nCheckpoint: {result.checkpoint}")
    typer.echo(f"Samples written: {result.text_path} ({result.tokens_per_sec:,.0f} tokens/s)")


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

    cfg = _config(config, experiment, set_items, strict)
    _report_prepare(runner.prepare(cfg, input_path))


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
    from mlharness.cli import rl_commands
    from mlharness.lm import runner

    if config is not None and rl_commands.is_rl_file(config):
        if experiment is not None:
            raise typer.BadParameter(
                "An rl config names its experiment itself: drop the EXPERIMENT argument."
            )
        rl_commands.run_train(
            rl_commands.load(config, set_items, strict), fresh=fresh, dry_run=dry_run
        )
        return
    cfg = _config(config, experiment, set_items, strict)
    runner.check_paths(cfg)
    if dry_run:
        echo_json("Configuration:", cfg.model_dump(mode="json"))
        typer.echo("Plan:")
        for line in runner.plan(cfg, sample=False)[1:]:
            typer.echo(f"  {line}")
        typer.echo("Dry run: nothing was trained or written.")
        return
    _train(cfg, fresh)


@app.command("sample", short_help="Generate text from a trained run.")
def sample(
    experiment: ExperimentArg = None,
    config: LMConfigOption = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir",
            help="Run to sample (default: the latest with a checkpoint).",
            metavar="PATH",
            show_default=False,
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="Checkpoint directory (default: best, else last).",
            metavar="PATH",
            show_default=False,
        ),
    ] = None,
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
    top_p: Annotated[
        float | None,
        typer.Option(
            help="Nucleus sampling: the likeliest tokens holding this much probability.",
            show_default=False,
        ),
    ] = None,
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
    options = {
        "num_samples": num_samples,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "start": start,
        "seed": seed,
    }
    given = {k: v for k, v in options.items() if v is not None and k != "start"}
    extra = [f"sample.{k}={v}" for k, v in given.items()]
    try:
        cfg = _config(config, experiment, [*(set_items or []), *extra], strict)
    except ConfigValidationError as exc:  # name the flag the user typed, not only the key
        flags = {f"'sample.{k}'": f"--{k.replace('_', '-')} {v}" for k, v in given.items()}
        raise ConfigValidationError([_typed(p, flags) for p in exc.problems]) from None
    if start is not None:
        cfg.sample.start = start
    _sample(cfg, run_dir, checkpoint)


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
    cfg = _config(config, experiment, set_items, strict)
    run_loop(cfg, input_path, fresh)


def run_loop(cfg: LMConfig, input_path: Path | None = None, fresh: bool = False) -> None:
    from mlharness.lm import runner

    runner.check_paths(cfg)
    report = runner.prepare_if_needed(cfg, input_path)
    if report is None:
        if _leads():
            typer.echo(f"Data in {cfg.data_dir} is current; prepare skipped.")
    else:
        _report_prepare(report)
    run_dir = _train(cfg, fresh)
    if _leads():
        _sample(cfg, run_dir, None)
