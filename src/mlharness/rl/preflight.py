"""What an rl run needs but its schema cannot see, checked in milliseconds before any model
loads: paths that exist and hold what they should, and rewards that are registered.

Dry runs and ``run-experiment``'s preflight call :func:`check` too, so a list of experiments
fails before its first one trains. Nothing here imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlharness.rl.config import RLConfig


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
        hf_dir = not any((path / m).is_file() for m in ("checkpoint.json", "summary.json"))
        if (path / "config.json").is_file() and hf_dir:  # a run's config.json is its own
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
