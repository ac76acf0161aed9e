"""``mlx generate-config``: seed 002's minimal, standard and advanced GRPO configs.

Each template is a complete config that validates and runs as written; only the model and
data paths come from the command line. Values are starting points for a small model on a
laptop; in a YAML file, the comment above each key is the schema's own field description.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import yaml

from mlharness.errors import ConfigError
from mlharness.runs.io import atomic_write_text

TEMPLATES = ("minimal", "standard", "advanced")


def _minimal(model: str, data: str) -> dict[str, Any]:
    return {
        "trainer": {
            "num_training_steps": 100,
            "learning_rate": 1e-5,
            "ppo_batch_size": 4,
            "num_rollout_samples": 4,
            "grpo_beta": 0.04,
            "seed": 42,
        },
        "model": {"model_path": model},
        "data": {"train_path": data, "max_prompt_len": 128, "max_gen_len": 64},
        "rewards": [{"name": "semantic_similarity", "weight": 1.0, "config": {}}],
        "checkpointing": {"save_every": 50, "keep_last_n": 2},
    }


def _standard(model: str, data: str) -> dict[str, Any]:
    config = _minimal(model, data)
    config["trainer"].update(
        {
            "optimizer_beta1": 0.9,
            "optimizer_beta2": 0.95,
            "optimizer_weight_decay": 0.01,
            "lr_schedule_config": {
                "name": "cosine_decay",
                "arguments": [1e-5, 90, 1e-6],
                "warmup": 10,
            },
            "grad_accum_steps": 2,
            "max_grad_norm": 1.0,
        }
    )
    config["generation"] = {
        "temperature": 1.0,
        "top_p": 1.0,
        "think_start_tag": "<think>",
        "think_end_tag": "</think>",
    }
    config["data"].update({"shuffle_data": True, "max_gen_len": 128})
    config["rewards"] = [
        {
            "name": "format_structure",
            "weight": 0.1,
            "config": {"min_think_length": 10, "min_answer_length": 2},
        },
        {
            "name": "thinking_quality",
            "weight": 0.2,
            "config": {"target_length_min": 40, "target_length_max": 90},
        },
        {"name": "answer_quality", "weight": 0.1, "config": {}},
        {"name": "semantic_similarity", "weight": 0.6, "config": {"method": "tfidf"}},
    ]
    config["monitoring"] = {"log_samples_every": 10, "max_logged_samples": 8}
    config["checkpointing"] = {"save_every": 50, "keep_last_n": 3, "save_optimizer_state": True}
    return config


def _advanced(model: str, data: str) -> dict[str, Any]:
    config = _standard(model, data)
    config["trainer"].update(
        {
            "loss_type": "dapo",
            "scale_rewards": "group",
            "epsilon": 0.2,
            "epsilon_high": 0.28,
            "num_iterations": 2,
            "dynamic_sampling": True,
            "mask_truncated_completions": True,
            "use_dual_gradients": True,
            "answer_gradient_weight": 1.5,
            "use_sft_on_answer": True,
            "sft_mode": "weighted",
            "sft_weight": 0.1,
            "sft_thinking_weight": 0.2,
            "sft_answer_weight": 1.0,
            "eval_every": 25,
        }
    )
    config["generation"].update(
        {
            "bias_close_think": -2.0,
            "punish_extra_think_end": -12.0,
            "min_think_tokens": 16,
            "think_end_early_bias": 12.0,
        }
    )
    config["data"]["val_path"] = data
    config["rewards"].append(
        {"name": "response_length_penalty", "weight": 0.05, "config": {"max_words": 150}}
    )
    config["monitoring"].update({"log_samples_every": 5, "use_wandb": False})
    return config


_BUILDERS = {"minimal": _minimal, "standard": _standard, "advanced": _advanced}
# Seed 002's order of the sections.
_SECTIONS = ("trainer", "model", "generation", "data", "rewards", "monitoring", "checkpointing")


def build(model_path: Path, data_path: Path, template: str = "standard") -> dict[str, Any]:
    """The config of ``template`` for a model and data, as plain data."""
    if template not in _BUILDERS:
        raise ConfigError(f"Unknown template '{template}': choose one of {', '.join(TEMPLATES)}.")
    for path, what in ((model_path, "--model-path"), (data_path, "--data-path")):
        if not path.exists():
            raise ConfigError(
                f"{what} {path} does not exist: point it at an existing {what[2:-5]}."
            )
    config = _BUILDERS[template](str(model_path.resolve()), str(data_path.resolve()))
    return {key: config[key] for key in _SECTIONS if key in config}


def _scalar(value: Any) -> str:
    """One YAML value on one line (flow style for lists)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip()
    return text[: -len("...")].strip() if text.endswith("\n...") else text


def _commented(data: Any, model: Any, indent: int = 0) -> list[str]:
    """``data`` as YAML lines, each key preceded by its field's description from ``model``."""
    from pydantic import BaseModel

    pad = "  " * indent
    lines: list[str] = []
    for key, value in data.items():
        field = model.model_fields.get(key) if model is not None else None
        if field is not None and field.description:
            wrapped = textwrap.wrap(field.description, width=max(40, 96 - len(pad)))
            lines += [f"{pad}# {line}" for line in wrapped]
        sub = field.annotation if field is not None else None
        sub = sub if isinstance(sub, type) and issubclass(sub, BaseModel) else None
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            lines += _commented(value, sub, indent + 1)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{pad}{key}:")
            dumped = yaml.safe_dump(value, sort_keys=False, width=1_000_000)
            lines += [f"{pad}  {line}" for line in dumped.splitlines()]
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return lines


def to_yaml(config: dict[str, Any], template: str) -> str:
    """The config as commented YAML (it loads back to exactly ``config``)."""
    from mlharness.rl.config import RLConfig

    header = [
        f"# GRPO config ({template} template), written by mlx generate-config.",
        "# Every field: docs/rl-config-reference.md. Train with: mlx train --config <this file>",
    ]
    if "val_path" in config.get("data", {}):
        header.append("# data.val_path is the training file here: point it at held-out prompts.")
    body: list[str] = []
    for key, value in config.items():
        body += ["", *_commented({key: value}, RLConfig)]
    return "\n".join(header + body) + "\n"


def write_config(
    model_path: Path,
    data_path: Path,
    output: Path,
    template: str = "standard",
    *,
    force: bool = False,
) -> Path:
    """Write the template as commented YAML (or JSON for a .json output), atomically.

    An existing file is someone's edited config more often than not: it is replaced only
    with ``force``.
    """
    if output.is_dir():
        raise ConfigError(f"--output {output} is a directory: give a file name, e.g. config.yaml.")
    if output.exists() and not force:
        raise ConfigError(
            f"--output {output} exists already: pass --force to replace it, or give another "
            "file name with --output."
        )
    suffix = output.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise ConfigError(
            f"Cannot write a config to {output}: use a .yaml, .yml or .json file name "
            "(mlx reads a config by its extension)."
        )
    config = build(model_path, data_path, template)
    text = json.dumps(config, indent=2) + "\n" if suffix == ".json" else to_yaml(config, template)
    atomic_write_text(output, text)
    return output
