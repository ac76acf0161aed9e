"""The table from a kind of experiment to its engine, and how a command finds the kind.

Engines are imported on first use, so ``mlx --help`` loads none of them, and a dry run of a
tabular config never loads lm's or rl's. Every engine keeps the contract of
:class:`mlharness.runs.engine.Engine`; the CLI calls nothing else.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from mlharness.runs.engine import Engine

ENGINES = {
    "tabular": "mlharness.tabular.engine",
    "lm": "mlharness.lm.engine",
    "rl": "mlharness.rl.engine",
}


def engine(kind: str) -> Engine:
    """The engine of ``kind``; an unknown kind is a ConfigError naming the supported ones."""
    from mlharness.errors import ConfigError

    if kind not in ENGINES:
        raise ConfigError(
            f"Experiment kind '{kind}' is not supported. Supported kinds: {', '.join(ENGINES)}."
        )
    return cast("Engine", importlib.import_module(ENGINES[kind]))


def file_kind(path: Path, default: str) -> str:
    """The kind of the experiment in a config file, read without validating it."""
    from mlharness.config.loading import experiment_kind, read_config_file

    return experiment_kind(read_config_file(path), default)


def run_kind(run_dir: Path | None, checkpoint: str | None) -> str | None:
    """The kind a run recorded in its config.json (a checkpoint's run, when only that is
    named); None when there is no run to read."""
    from mlharness.runs.rundata import run_kind as recorded

    candidates = [run_dir] if run_dir is not None else []
    if checkpoint and Path(checkpoint).is_dir():
        candidates.append(Path(checkpoint).resolve().parent.parent)
    for candidate in candidates:
        kind = recorded(candidate)
        if kind is not None:
            return kind
    return None


if TYPE_CHECKING:
    # mypy checks each engine module against the contract here, at no cost at run time.
    from mlharness.lm import engine as _lm
    from mlharness.rl import engine as _rl
    from mlharness.tabular import engine as _tabular

    _checked: tuple[Engine, Engine, Engine] = (_tabular, _lm, _rl)  # pyright: ignore[reportAssignmentType]
