"""``mlx sweep``: search a config's hyper-parameters with Optuna; ``mlx sweep show``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlharness.cli import app
from mlharness.cli.options import SetOption, StrictOption

if TYPE_CHECKING:
    from mlharness.runs.sweep.study import Sweep

sweep_app = typer.Typer(
    name="sweep",
    invoke_without_command=True,
    no_args_is_help=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(sweep_app, name="sweep", short_help="Search hyper-parameters with Optuna (any kind).")

StorageOption = Annotated[
    str | None,
    typer.Option(
        "--storage",
        metavar="URL",
        help="Optuna RDB URL of the study, e.g. postgresql://user:pw@host/db, shared by "
        "sweeps on several machines (default: sqlite under <output dir>/sweeps/<name>/).",
        show_default=False,
    ),
]


@sweep_app.callback()
def sweep(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            metavar="PATH",
            help="Base experiment config (any kind); its sweep: section is the search space "
            "unless --space is given.",
            show_default=False,
        ),
    ] = None,
    space: Annotated[
        Path | None,
        typer.Option(
            "--space",
            metavar="PATH",
            help="A file holding the sweep settings (metric, params, n_trials, ...).",
            show_default=False,
        ),
    ] = None,
    storage: StorageOption = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="The study's name (default: sweep.name, else the experiment's).",
            show_default=False,
        ),
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Trials run at once.")] = 1,
    set_items: SetOption = None,
    strict: StrictOption = False,
) -> None:
    """Run an Optuna study over a base config: every trial is an ordinary run.

    Running the same command again continues the study; several processes (or machines,
    with --storage) may work on one study at once. `mlx sweep show NAME` reports it.
    """
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        import sys

        click_errors = sys.modules[typer.BadParameter.__module__]
        raise click_errors.MissingParameter(ctx=ctx, param_hint="'--config'", param_type="option")
    from mlharness.runs.sweep.loop import run_sweep

    run_sweep(_build(config, space, storage, name, set_items or [], strict), jobs)


def _build(
    config: Path,
    space: Path | None,
    storage: str | None,
    name: str | None,
    set_items: list[str],
    strict: bool,
) -> Sweep:
    """The sweep, checked before any trial: settings, base config, searched keys."""
    from mlharness.cli.engines import engine
    from mlharness.config.loading import (
        deep_merge,
        env_overrides,
        experiment_kind,
        load_raw,
        parse_set_items,
        without_sweep,
    )
    from mlharness.errors import ConfigError
    from mlharness.runs.sweep.spec import check_keys, load_spec
    from mlharness.runs.sweep.study import Sweep, default_storage, import_optuna

    import_optuna()
    spec = load_spec(config, space, set_items)
    raw = load_raw(config, set_items=set_items)
    if not isinstance(raw, dict):
        raise ConfigError(f"{config} holds a list of experiments; a sweep's base is one.")
    chosen = engine(experiment_kind(raw))
    base = chosen.from_raw(raw, config, strict)
    chosen.check(base)
    check_keys(spec, base.model_dump(mode="json"))
    study_name = _study_name(name or spec.name or base.name)
    output_dir = _output_dir(base)

    def resolve(trial_raw: dict[str, Any]) -> dict[str, Any]:
        resolved: dict[str, Any] = chosen.from_raw(trial_raw, config, strict).model_dump(
            mode="json"
        )
        return resolved

    return Sweep(
        spec=spec,
        name=study_name,
        config=config,
        experiment=base.name,
        base=raw,
        overrides=deep_merge(
            without_sweep(deep_merge(env_overrides(), parse_set_items(set_items))),
            _pinned_data(base),
        ),
        output_dir=output_dir,
        storage=storage or default_storage(output_dir, study_name),
        step_key=chosen.METRICS.step_key,
        resolve=resolve,
        strict=strict,
    )


def _study_name(name: str) -> str:
    """The study's name doubles as a directory name under the output directory."""
    from mlharness.config.paths import check_name
    from mlharness.errors import ConfigError

    try:
        check_name(name)
    except ValueError as exc:
        raise ConfigError(f"The sweep's {exc}") from exc
    return name


def _pinned_data(config: Any) -> dict[str, Any]:
    """Trials run under their own experiment names, and an lm config's data directory
    defaults to data/<name>: pin it to the base experiment's, which was prepared."""
    prepare = getattr(config, "prepare", None)
    if prepare is not None and getattr(prepare, "data_dir", "") is None:
        return {"prepare": {"data_dir": str(config.data_dir)}}
    return {}


def _output_dir(config: Any) -> Path:
    """Where the experiment's runs go: lm and rl configs say it; tabular's is checked so."""
    found = getattr(config, "output_dir", None)
    if found is not None:
        return Path(found)
    from mlharness.config import ensure_within_workspace

    return Path(ensure_within_workspace(config.output.directory, "Output directory"))


@sweep_app.command("show", short_help="The best trial, all trials, importances and plots.")
def show(
    name: Annotated[str, typer.Argument(help="The sweep's (study's) name.", show_default=False)],
    storage: StorageOption = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            "-o",
            help="The experiments' output directory (default: runs/ or outputs/ of the "
            "workspace); the sweep's files are in its sweeps/NAME/.",
            show_default=False,
        ),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            metavar="PATH",
            help="Write the best trial's full config (.yaml or .json) for mlx train.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show a sweep: the best trial and its config, a table of trials, parameter
    importances; write plots (PNG) and summary.md to <output dir>/sweeps/NAME/."""
    from mlharness.runs.io import atomic_write_text
    from mlharness.runs.sweep.report import export_best, load_study, summary_text, write_plots
    from mlharness.runs.sweep.study import sweep_dir

    base = output_dir or _find_sweep_output(name)
    directory = sweep_dir(base, name)
    url = storage or f"sqlite:///{(directory / 'study.db').resolve()}"
    if storage is None and not (directory / "study.db").is_file():
        from mlharness.errors import SweepError

        raise SweepError(
            f"No sweep named '{name}' in {base / 'sweeps'}: check the name, or pass the "
            "--output-dir (or --storage) the sweep used."
        )
    study = load_study(name, url)
    text = summary_text(study)
    typer.echo(text)
    atomic_write_text(directory / "summary.md", text)
    plots = write_plots(study, directory / "plots")
    typer.echo(f"Plots: {', '.join(str(p) for p in plots)}")
    if export is not None:
        typer.echo(f"Best config: {export_best(study, export)}")


def _find_sweep_output(name: str) -> Path:
    """The workspace's runs/ or outputs/ that holds sweeps/NAME (runs/ when neither does)."""
    from mlharness.config import workspace_root

    root = workspace_root()
    for candidate in ("runs", "outputs"):
        if (root / candidate / "sweeps" / name).is_dir():
            return root / candidate
    return root / "runs"
