"""GRPO commands (seed 002): ``mlx train`` on an rl config, ``preprocess``, ``generate-config``,
and the rl side of ``mlx eval``. ``mlx-train``, ``mlx-preprocess``, ``mlx-generate-config`` and
``mlx-evaluate`` are thin aliases of these (see :mod:`mlharness.cli`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlharness.cli import app
from mlharness.cli.options import SetOption, StrictOption, echo_json

if TYPE_CHECKING:
    from mlharness.rl.config import RLConfig

RLConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="GRPO config (.yaml, .toml, .json).", metavar="PATH"),
]


def is_rl_file(path: Path) -> bool:
    """Whether a config file holds an rl experiment (read without validating)."""
    from mlharness.config.loading import read_config_file
    from mlharness.rl.config import is_rl_config

    return is_rl_config(read_config_file(path))


def load(path: Path, set_items: list[str] | None, strict: bool) -> RLConfig:
    from mlharness.rl.config import load_rl_config

    return load_rl_config(path, set_items=set_items or [], strict=strict)


def check(cfg: RLConfig) -> None:
    """What a run needs but the schema cannot see, checked in milliseconds before any model
    loads: the output directory lies in the workspace, the model and data paths exist, and
    every reward is registered (user reward sources imported). Dry runs and run-experiment's
    preflight call it too, so a list fails before its first experiment trains."""
    from mlharness.config.paths import ensure_within_workspace
    from mlharness.errors import ConfigError, DatasetError
    from mlharness.rl.data import _check_jsonl_path, npy_files
    from mlharness.rl.rewards import RewardSet, load_reward_sources

    ensure_within_workspace(cfg.output_dir, "trainer.output_dir")
    m, d = cfg.model, cfg.data
    for field, path in (
        ("model.model_path", m.model_path),
        ("model.ref_model_path", m.ref_model_path),
    ):
        problem = None if path is None else _model_dir_problem(path)
        if problem is not None:
            raise ConfigError(
                f"{field} {path} {problem}. Point it at an `mlx train` run directory, one of "
                "its checkpoints, or a local Hugging Face model directory."
            )
    for name, path in (("train", d.train_path), ("val", d.val_path)):
        if path is None:
            continue
        if path.exists() and not path.is_dir() and not path.is_file():
            raise DatasetError(
                f"data.{name}_path {path} is {_file_kind(path)}, not a data file or directory."
            )
        if d.loader_type == "jsonl":
            _check_jsonl_path(path)
            continue
        # the loader's own reading of a directory (its train_* files), for val_path too
        missing = [str(f) for f in npy_files(path)[:2] if not f.is_file()]
        if missing:
            raise DatasetError(
                f"No NPY dataset at data.{name}_path {path}: {', '.join(missing)} missing. "
                "Create it with `mlx preprocess --config FILE --output-train-path data/train "
                "--output-val-path data/val`, or set data.loader_type to jsonl."
            )
    load_reward_sources(cfg.reward_sources, None)
    RewardSet(cfg.rewards)


def _model_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot hold a policy model, without importing torch: the files that
    ``rl.policy.describe`` looks for (checkpoint.json, config.json, checkpoints/, or runs
    holding checkpoints/) must be there. None when they are."""
    if not path.exists():
        return "does not exist"
    if not path.is_dir():
        return f"is {_file_kind(path)}, not a model directory"
    try:
        if (path / "config.json").is_file() and not (path / "checkpoint.json").is_file():
            return _hf_config_problem(path / "config.json")
        markers = ("checkpoint.json", "config.json")
        if any((path / m).is_file() for m in markers) or (path / "checkpoints").is_dir():
            return None
        if any((p / "checkpoints").is_dir() for p in path.iterdir() if p.is_dir()):
            return None
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return (
        "holds no model: no checkpoint.json (an mlx checkpoint), no config.json (a Hugging "
        "Face model), no checkpoints/ directory (an mlx run) and no runs with checkpoints"
    )


def _hf_config_problem(config: Path) -> str | None:
    """A Hugging Face config.json must say its ``model_type``; an empty one made the
    tokenizer library print a paragraph about sentencepiece instead of the real problem."""
    import json

    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"has a config.json that cannot be read as JSON ({exc})"
    if not isinstance(data, dict) or not data.get("model_type"):
        return (
            "has a config.json without a model_type, so it is not a Hugging Face model: "
            "save the model there with save_pretrained"
        )
    return None


def _file_kind(path: Path) -> str:
    """``a character device``, ``a regular file``...: what ``path`` is, for messages."""
    import stat

    mode = path.stat().st_mode
    kinds = {
        stat.S_ISREG: "a regular file",
        stat.S_ISDIR: "a directory",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISFIFO: "a named pipe",
        stat.S_ISSOCK: "a socket",
    }
    return next((kind for test, kind in kinds.items() if test(mode)), "not a regular file")


def _quiet_hub() -> None:
    """No Hugging Face "Loading weights" / "Writing model shards" bars on every load and
    checkpoint: the command shows its own progress (a user's own setting wins)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def plan(cfg: RLConfig) -> list[str]:
    t, d = cfg.trainer, cfg.data
    rewards = ", ".join(f"{r.name} x {r.weight:g}" for r in cfg.rewards)
    return [
        f"Load the policy from {cfg.model.model_path}"
        + (f" with LoRA r={cfg.model.lora_rank}" if cfg.model.use_lora else ""),
        f"Read prompts from {d.train_path} ({d.loader_type})",
        f"{t.num_training_steps} GRPO steps: {t.prompts_per_step} prompts x "
        f"{t.num_rollout_samples} completions (<= {d.max_gen_len} tokens), loss {t.loss_type}, "
        f"beta {t.grpo_beta:g}",
        f"Rewards: {rewards}",
        f"Write the run to {cfg.output_dir / cfg.experiment}/<timestamp>/",
    ]


def run_train(cfg: RLConfig, *, fresh: bool = False, dry_run: bool = False) -> Path | None:
    """Train (or resume) a GRPO run and report it; exits 130 when interrupted."""
    check(cfg)
    if dry_run:
        echo_json("Configuration:", cfg.model_dump(mode="json"))
        typer.echo("Plan:")
        for line in plan(cfg):
            typer.echo(f"  {line}")
        typer.echo("Dry run: nothing was trained or written.")
        return None
    _quiet_hub()
    from mlharness.rl.trainer import train

    typer.echo(f"Experiment: {cfg.experiment} (GRPO)")
    for line in plan(cfg):
        logging.getLogger("mlharness.rl").debug("Plan: %s", line)
    result = train(cfg, fresh=fresh)
    if result.resumed_from is not None:
        typer.echo(f"Resumed from {result.resumed_from}")
    final = result.final_metrics
    parts = [f"reward {final['reward']:.4f}"] if "reward" in final else []
    if final.get("val_reward") is not None:
        start = final.get("val_reward_initial")
        before = f"{start:.4f} at step 0 -> " if start is not None else ""
        parts.append(f"val reward {before}{final['val_reward']:.4f}")
    typer.echo(
        f"GRPO {result.status} at step {result.steps}" + (": " + ", ".join(parts) if parts else "")
    )
    typer.echo(f"Run directory: {result.run_dir}")
    if result.status == "interrupted":
        typer.echo("Interrupted: run 'mlx train --config ...' again to resume.")
        raise typer.Exit(130)
    return result.run_dir


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
    _quiet_hub()
    import torch

    from mlharness.rl.data import load_examples
    from mlharness.rl.data import preprocess as run
    from mlharness.rl.policy import load_policy

    cfg = load(config, set_items, strict)
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


def run_eval(
    run_dir: Path | None,
    checkpoint: Path | None,
    config: Path | None,
    benchmarks: list[str],
    *,
    gsm8k_path: Path | None,
    limit: int | None,
    num_samples: int,
    set_items: list[str] | None,
    strict: bool,
    dry_run: bool = False,
    max_new_tokens: int | None = None,
) -> None:
    _quiet_hub()
    from mlharness.rl.evaluate import check_request, evaluate, resolve

    cfg = load(config, set_items, strict) if config is not None else None
    if dry_run:
        run, ckpt, cfg = resolve(run_dir, checkpoint, cfg)
        check_request(cfg, benchmarks, gsm8k_path, limit)
        typer.echo(f"Checkpoint to load: {ckpt}")
        if benchmarks:
            typer.echo(
                f"Benchmarks: {', '.join(benchmarks)} ({num_samples} completion(s) per problem"
                + (f", first {limit} problems" if limit else "")
                + ")"
            )
        if cfg.data.val_path is not None:
            typer.echo(f"Validation prompts: {cfg.data.val_path}, scored by the run's rewards")
        typer.echo(f"Would write: {run / 'eval' / (ckpt.name + '.json')} and .md")
        typer.echo("Dry run: nothing was evaluated or written.")
        return
    report: dict[str, Any] = evaluate(
        run_dir=run_dir,
        checkpoint=checkpoint,
        config=cfg,
        benchmarks=benchmarks,
        gsm8k_path=gsm8k_path,
        limit=limit,
        num_samples=num_samples,
        max_new_tokens=max_new_tokens,
    )
    typer.echo(report["markdown"])
    typer.echo("Written: " + ", ".join(report["files"]))
