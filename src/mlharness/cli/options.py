"""Options that several ``mlx`` commands share, defined once so their help reads the same.

Only Typer is imported here: ``mlx --help`` loads this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        help="Experiment config file (.json, .yaml, .yml or .toml); may hold a list.",
        metavar="PATH",
        show_default=False,
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a config field, e.g. --set training.epochs=5 or --set train.max_iters=100 "
        "(repeatable). Applied after "
        "the MLX_OVERRIDES environment variable (a JSON object).",
        show_default=False,
    ),
]
StrictOption = Annotated[
    bool, typer.Option("--strict", help="Treat unknown config keys as errors, not warnings.")
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Validate and show the plan without running anything.")
]
FreshOption = Annotated[
    bool,
    typer.Option("--fresh", help="Start a new run instead of resuming the latest unfinished one."),
]


def echo_json(title: str, data: Any) -> None:
    """A title line, then ``data`` as indented JSON (dry runs show the resolved config so)."""
    from mlharness.runs.io import dumps

    typer.echo(title)
    typer.echo(dumps(data))
