"""GRPO's own commands (seed 002): ``preprocess`` and ``generate-config``.

``mlx train`` and ``mlx eval`` on an rl config go to :mod:`mlharness.rl.engine` through the
engine table (:mod:`mlharness.cli.engines`). ``mlx-train``, ``mlx-preprocess``,
``mlx-generate-config`` and ``mlx-evaluate`` are thin aliases (see :mod:`mlharness.cli`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlharness.cli import app
from mlharness.cli.options import SetOption, StrictOption

RLConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="GRPO config (.yaml, .toml, .json).", metavar="PATH"),
]


def default_val_prefix(train: Path) -> Path:
    """``data/train`` -> ``data/val``; a directory keeps both splits inside it."""
    if train.is_dir():
        return train
    stem = train.name.removesuffix(".npy").removesuffix(".json")
    name = stem.replace("train", "val") if "train" in stem else f"{stem}_val"
    return train.with_name(name)


@app.command("preprocess", short_help="Split and pre-tokenize GRPO prompts into NPY files.")
def preprocess(
    config: RLConfigOption,
    output_train_path: Annotated[
        Path,
        typer.Option("--output-train-path", help="Prefix of the train files.", metavar="PATH"),
    ],
    output_val_path: Annotated[
        Path | None,
        typer.Option(
            "--output-val-path",
            help="Prefix of the val files; default: the train prefix with 'train' replaced by "
            "'val' (data/train -> data/val), or <train prefix>_val.",
            metavar="PATH",
            show_default=False,
        ),
    ] = None,
    set_items: SetOption = None,
    strict: StrictOption = False,
) -> None:
    """Tokenize data.train_path with the policy's tokenizer into <prefix>_prompts.npy,
    <prefix>_completions.npy and a sidecar, holding out data.val_fraction for validation."""
    from mlharness.rl.engine import load, quiet_hub

    quiet_hub()
    import torch

    from mlharness.rl.data import load_examples
    from mlharness.rl.data import preprocess as run
    from mlharness.rl.policy import load_policy

    cfg = load(config, set_items or [], strict)
    policy = load_policy(
        cfg.model.model_path,
        device=torch.device("cpu"),
        use_chat_template=cfg.data.use_chat_template,
    )
    examples, loaded = load_examples(
        cfg.data.train_path, "jsonl", policy.tokenizer, cfg.data.on_invalid
    )
    report = run(
        examples,
        policy.tokenizer,
        output_train=output_train_path,
        output_val=output_val_path or default_val_prefix(output_train_path),
        max_prompt_len=cfg.data.max_prompt_len,
        max_gen_len=cfg.data.max_gen_len,
        val_fraction=cfg.data.val_fraction,
        seed=max(cfg.trainer.seed, 0),
        system_prompt=cfg.data.system_prompt,
    )
    typer.echo(loaded.summary())
    typer.echo(report.summary())


@app.command("generate-config", short_help="Write a GRPO config from a template.")
def generate_config(
    model_path: Annotated[
        Path, typer.Option("--model-path", help="Path to the model.", metavar="PATH")
    ],
    data_path: Annotated[
        Path, typer.Option("--data-path", help="Path to the training data.", metavar="PATH")
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", help="Config file to write (.yaml, .yml or .json).", metavar="PATH"
        ),
    ] = Path("config.yaml"),
    template: Annotated[
        str,
        typer.Option("--template", help="minimal, standard or advanced.", metavar="NAME"),
    ] = "standard",
    force: Annotated[
        bool, typer.Option("--force", help="Replace --output if it exists already.")
    ] = False,
) -> None:
    """Write a valid, runnable GRPO config for the model and data: commented YAML, or JSON
    for a .json --output."""
    from mlharness.rl.templates import write_config

    path = write_config(model_path, data_path, output, template, force=force)
    typer.echo(f"Wrote {template} config: {path}")
    typer.echo(f"Train with: mlx train --config {path}")
