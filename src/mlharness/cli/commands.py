"""The subcommands of ``mlx``: each loads its inputs, calls an engine, says where things went."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from mlharness.cli import app
from mlharness.cli.options import (
    ConfigOption,
    DryRunOption,
    FreshOption,
    SetOption,
    StrictOption,
    echo_json,
)

_T = TypeVar("_T")

if TYPE_CHECKING:
    from mlharness.runs.engine import EvalRequest


# The options of `mlx eval`; GRPO runs read the benchmark ones.
RunDirOption = Annotated[
    Path | None,
    typer.Option(
        "--run-dir",
        help="Run directory containing checkpoints/.",
        metavar="PATH",
        show_default=False,
    ),
]
EvalConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Experiment config to rebuild the dataset from (default: the run's config.json).",
        metavar="PATH",
        show_default=False,
    ),
]
CheckpointOption = Annotated[
    str | None,
    typer.Option(
        "--checkpoint",
        help="Checkpoint to evaluate: a name in the run's checkpoints/ or a path "
        "(default: checkpoint_final; lm and GRPO runs: the best, else the last).",
        metavar="NAME",
        show_default=False,
    ),
]
MetricsOption = Annotated[
    str | None,
    typer.Option(
        "--metrics",
        metavar="LIST",
        help="Comma-separated metrics to report, e.g. mse,r2 or accuracy,log_loss (default: all).",
        show_default=False,
    ),
]
BenchmarkOption = Annotated[
    list[str] | None,
    typer.Option(
        "--benchmark",
        help="GRPO runs: human_eval and/or gsm8k (repeat the option, or list them after "
        "it); the run's own validation prompts are always scored when it has them.",
        metavar="NAME",
        show_default=False,
    ),
]
Gsm8kPathOption = Annotated[
    Path | None,
    typer.Option(
        "--gsm8k-path",
        help="GSM8K test JSONL (default: data/gsm8k/test.jsonl).",
        metavar="PATH",
        show_default=False,
    ),
]
LimitOption = Annotated[
    int | None,
    typer.Option("--limit", help="GRPO runs: evaluate the first N problems only.", min=1),
]
NumSamplesOption = Annotated[
    int,
    typer.Option("--num-samples", help="GRPO runs: completions per problem (pass@k).", min=1),
]
MaxNewTokensOption = Annotated[
    int | None,
    typer.Option(
        "--max-new-tokens",
        help="GRPO runs: tokens generated per benchmark answer (default: the run's "
        "data.max_gen_len).",
        min=1,
        show_default=False,
    ),
]


def _load_experiments(path: Path, set_items: list[str] | None, strict: bool) -> list[Any]:
    """Read a config file holding one experiment or a list, validate every one up front.

    Validating all before running any means a typo in the third experiment is reported
    before the first one spends an hour training.
    """
    from mlharness.cli.engines import ENGINES, engine
    from mlharness.config import load_raw
    from mlharness.config.loading import experiment_kind
    from mlharness.errors import ConfigError, ConfigValidationError

    raw = load_raw(path, set_items=set_items or [])
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise ConfigError(f"{path} holds an empty list: add at least one experiment.")
    configs: list[Any] = []
    for i, item in enumerate(items, start=1):
        kind = experiment_kind(item)
        if kind not in ENGINES:
            raise ConfigError(
                f"Experiment kind '{kind}' in {path} is not supported. Supported kinds: "
                f"{', '.join(ENGINES)}."
            )
        try:
            configs.append(engine(kind).from_raw(item, path, strict))
        except ConfigValidationError as exc:
            if len(items) == 1:
                raise
            raise ConfigValidationError(
                [f"experiment {i} of {len(items)}: {p}" for p in exc.problems]
            ) from exc
    return configs


def _preflight(configs: list[Any]) -> None:
    """Check what a run needs but a schema cannot see, for every experiment before the first.

    The output directory must lie inside the workspace and a csv file must exist: a list
    whose third experiment writes to ``../outside`` must fail before the first one trains.
    """
    from mlharness.cli.engines import engine
    from mlharness.errors import ConfigError, MlxError

    for i, cfg in enumerate(configs, start=1):
        try:
            engine(cfg.kind).check(cfg)
        except MlxError as exc:
            if len(configs) == 1:
                raise
            raise ConfigError(
                f"Experiment {i} of {len(configs)} ('{cfg.name}'): {exc}\n"
                "Nothing was run: fix it and run the list again."
            ) from exc


def _counting_config_warnings(load: Callable[[], _T]) -> tuple[_T, int]:
    """``load()`` and how many config warnings it gave, shown as they came: a dry run must
    not say a plain "OK" over a typo'd key it only warned about."""
    import warnings

    from mlharness.config import ConfigWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConfigWarning)
        result = load()
    for w in caught:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return result, sum(issubclass(w.category, ConfigWarning) for w in caught)


@app.command("run-experiment", short_help="Run an experiment, or a list of experiments.")
def run_experiment(
    config: ConfigOption,
    fresh: FreshOption = False,
    dry_run: DryRunOption = False,
    set_items: SetOption = None,
    strict: StrictOption = False,
) -> None:
    """Run an experiment (or a list of them, in order) from a config file.

    A list stops at its first failure. Every config is validated before the first runs.
    Each experiment resumes its latest unfinished run (tabular: one of the same config)
    unless --fresh.
    """
    from mlharness.cli.engines import engine

    configs, warned = _counting_config_warnings(
        lambda: _load_experiments(config, set_items, strict)
    )
    _preflight(configs)
    total = len(configs)
    if dry_run:
        noted = f", {warned} warning{'s' if warned != 1 else ''}" if warned else ""
        for i, cfg in enumerate(configs, start=1):
            header = f"[{i}/{total}] " if total > 1 else ""
            echo_json(f"{header}Configuration ({config}):", cfg.model_dump(mode="json"))
            typer.echo("Plan:")
            for line in engine(cfg.kind).plan(cfg):
                typer.echo(f"  {line}")
            typer.echo(f"Validation: OK{noted if total == 1 else ''} ({cfg.name})\n")
        typer.echo(f"Dry run: {total} experiment(s) valid{noted}; nothing was written.")
        return
    for i, cfg in enumerate(configs, start=1):
        if total > 1:
            typer.echo(f"\n=== Experiment {i}/{total}: {cfg.name} ===")
        if engine(cfg.kind).train(cfg, fresh=fresh) == "interrupted":
            raise typer.Exit(130)


@app.command("eval", short_help="Evaluate a run's checkpoint.")
def eval_command(
    ctx: typer.Context,
    run_dir: RunDirOption = None,
    config: EvalConfigOption = None,
    checkpoint: CheckpointOption = None,
    metrics: MetricsOption = None,
    benchmark: BenchmarkOption = None,
    gsm8k_path: Gsm8kPathOption = None,
    limit: LimitOption = None,
    num_samples: NumSamplesOption = 1,
    max_new_tokens: MaxNewTokensOption = None,
    dry_run: DryRunOption = False,
    set_items: SetOption = None,
    strict: StrictOption = False,
) -> None:
    """Evaluate a run's checkpoint on its train and validation splits."""
    from mlharness.cli.engines import engine
    from mlharness.runs.engine import EvalRequest

    if run_dir is None and checkpoint is None and config is None and not benchmark:
        import sys

        # Click's own "Missing option" usage error, as when --run-dir was required.
        click_errors = sys.modules[typer.BadParameter.__module__]
        raise click_errors.MissingParameter(ctx=ctx, param_hint="'--run-dir'", param_type="option")
    request = EvalRequest(
        run_dir=run_dir,
        config=config,
        checkpoint=checkpoint,
        metrics=[m.strip() for m in metrics.split(",") if m.strip()] if metrics else None,
        benchmarks=benchmark or [],
        gsm8k_path=gsm8k_path,
        limit=limit,
        num_samples=num_samples,
        max_new_tokens=max_new_tokens,
        set_items=set_items or [],
        strict=strict,
        dry_run=dry_run,
    )
    engine(_eval_kind(request)).evaluate(request)


def _eval_kind(request: EvalRequest) -> str:
    """Benchmarks are GRPO's; else the kind of --config, else the kind the run recorded."""
    from mlharness.cli.engines import file_kind, run_kind

    if request.benchmarks:
        return "rl"
    if request.config is not None and request.config.is_file():
        return file_kind(request.config, "tabular")
    return run_kind(request.run_dir, request.checkpoint) or "tabular"


def _check_output_file(path: Path, option: str) -> None:
    """Refuse a directory where a file will be written, before any work is done."""
    from mlharness.errors import MlxError

    if path.is_dir():
        raise MlxError(
            f"{option} {path} is a directory; give the path of a file to write, "
            f"for example {path / ('comparison.png' if option == '--output' else 'runs.md')}."
        )


def _default_output_dir() -> Path:
    from mlharness.config import workspace_root
    from mlharness.errors import RunDirectoryError

    root = workspace_root()
    for name in ("runs", "outputs"):
        if (root / name / "index.json").is_file():
            return root / name
    raise RunDirectoryError(
        f"No run index found in {root / 'runs'} or {root / 'outputs'}. Pass --output-dir "
        "with the output.directory of your experiments."
    )


def _metrics_by_kind() -> dict[str, Any]:
    """Each kind's description of its metrics (step key, headline metrics), from the table;
    engine modules import torch only when they train, so history stays light."""
    from mlharness.cli.engines import ENGINES, engine

    return {kind: engine(kind).METRICS for kind in ENGINES}


@app.command("history", short_help="List past runs from the run index.")
def history(
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            "-o",
            help="Directory holding index.json (default: runs/ or outputs/ of the workspace).",
            show_default=False,
        ),
    ] = None,
    experiment: Annotated[
        str | None,
        typer.Option(
            "--experiment", "-e", help="Only runs of this experiment.", show_default=False
        ),
    ] = None,
    markdown: Annotated[
        Path | None,
        typer.Option(
            "--markdown", help="Also write the table to this Markdown file.", show_default=False
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", "-n", min=1, help="Show only the newest N runs.", show_default=False
        ),
    ] = None,
) -> None:
    """List past runs from the run index (oldest first), one table per kind of run."""
    from mlharness.errors import RunDirectoryError
    from mlharness.runs.history_report import history_markdown
    from mlharness.runs.index import INDEX_NAME, list_all_runs
    from mlharness.runs.io import atomic_write_text

    if markdown is not None:
        _check_output_file(markdown, "--markdown")
    base = output_dir or _default_output_dir()
    index_path = base / INDEX_NAME
    if not index_path.is_file():
        raise RunDirectoryError(
            f"No run index at {index_path}. Run an experiment first, or pass the --output-dir "
            "your experiments write to."
        )
    runs = list_all_runs(index_path)
    if experiment:
        runs = [r for r in runs if r.get("experiment") == experiment]
        if not runs:
            names = sorted({str(r.get("experiment")) for r in list_all_runs(index_path)})
            raise RunDirectoryError(
                f"No runs of experiment '{experiment}' in {index_path}. "
                f"Experiments there: {', '.join(names) or 'none'}."
            )
    if limit:
        runs = runs[-limit:]
    text = history_markdown(runs, base, _metrics_by_kind())
    typer.echo(text)
    if markdown:
        atomic_write_text(markdown, text)
        typer.echo(f"Written: {markdown}")


@app.command("compare", short_help="Compare runs: metrics side by side, curves overlaid.")
def compare(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="Run directories to compare.", show_default=False)
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Where to write the overlaid curves (PNG)."),
    ] = Path("comparison.png"),
    markdown: Annotated[
        Path | None,
        typer.Option(
            "--markdown", help="Also write the table to this Markdown file.", show_default=False
        ),
    ] = None,
) -> None:
    """Compare runs of any kind: best and final metrics, differing config, curves by step.

    Runs are grouped by kind (from each run's config.json); each kind gets its own table and
    row of panels, its curves drawn against its own step.
    """
    from mlharness.runs.compare import compare_markdown, group_by_kind, panel_rows
    from mlharness.runs.io import atomic_write_text
    from mlharness.runs.plots import plot_comparison
    from mlharness.runs.rundata import load_run

    _check_output_file(output, "--output")
    if markdown is not None:
        _check_output_file(markdown, "--markdown")
    runs = []
    labels: set[str] = set()
    for run_dir in run_dirs:
        label = f"{run_dir.parent.name}/{run_dir.name}"
        label = str(run_dir) if label in labels else label
        labels.add(label)
        runs.append(load_run(run_dir, label))
    described = _metrics_by_kind()
    groups = group_by_kind(runs, described)
    text = compare_markdown(groups, described)
    typer.echo(text)
    if markdown:
        atomic_write_text(markdown, text)
        typer.echo(f"Written: {markdown}")
    if plot_comparison(panel_rows(groups, described), output) is not None:
        typer.echo(f"Curves: {output}")
