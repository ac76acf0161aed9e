"""``mlx sweep show``: a study read back as a person wants it, and its best config exported.

The best trial and its config, a Markdown table of every trial, parameter importances
(Optuna's fANOVA, once two trials completed), and Optuna's own matplotlib plots as PNGs:
optimisation history, parallel coordinates and one slice per parameter.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlharness.errors import SweepError
from mlharness.runs.io import atomic_write_bytes, atomic_write_text, dumps
from mlharness.runs.sweep.study import import_optuna, storage_for
from mlharness.runs.tables import table

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)


def load_study(name: str, storage: str) -> optuna.Study:
    """An existing study; an unknown name says which studies the storage holds."""
    import_optuna()
    import optuna

    store = storage_for(storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False)]
    if name not in names:
        raise SweepError(
            f"No sweep named '{name}' in {storage} (sweeps there: {', '.join(names) or 'none'}); "
            "check the name, or pass the --storage (or --output-dir) the sweep used."
        )
    return optuna.load_study(study_name=name, storage=store)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    try:
        return study.best_trial
    except ValueError as exc:
        raise SweepError(
            f"Sweep '{study.study_name}' has no completed trial yet: run it (mlx sweep "
            "--config ...) until one completes."
        ) from exc


def summary_text(study: optuna.Study) -> str:
    """The best trial, its config, the table of trials and the importances, as Markdown."""
    metric = str(study.user_attrs.get("metric", "value"))
    lines = [f"# Sweep {study.study_name}", ""]
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    lines.append(", ".join(f"{n} {state}" for state, n in counts.items()) or "No trials yet.")
    lines.append(f"Objective: {study.direction.name.lower()} {metric}.")
    try:
        best = study.best_trial
    except ValueError:
        best = None
    if best is not None:
        lines += ["", f"## Best: trial {best.number}, {metric} {best.value:.6g}", ""]
        lines += [f"- {k} = {v}" for k, v in best.params.items()]
        lines += [f"- run: {best.user_attrs.get('run_dir', '?')}", "", "Config:", "```json"]
        lines += [dumps(best.user_attrs.get("config", {})), "```"]
    lines += ["", "## Trials", "", *trials_table(trials, metric)]
    importances = param_importances(study)
    if importances:
        lines += ["", "## Parameter importances", ""]
        rows = [[k, f"{v:.3f}"] for k, v in importances.items()]
        lines += table(["parameter", "importance"], rows)
    return "\n".join(lines) + "\n"


def trials_table(trials: list[optuna.trial.FrozenTrial], metric: str) -> list[str]:
    names = sorted({k for t in trials for k in t.params})
    rows = []
    for t in trials:
        value = f"{t.value:.6g}" if t.value is not None else ""
        params = [_value(t.params.get(k)) for k in names]
        run = str(t.user_attrs.get("run_dir", ""))
        rows.append([str(t.number), t.state.name.lower(), *params, value, run])
    return table(["trial", "state", *names, metric, "run directory"], rows)


def _value(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def param_importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's importances; {} before two trials completed or with one parameter."""
    from optuna.importance import get_param_importances
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        return dict(get_param_importances(study))
    except (RuntimeError, ValueError) as exc:  # every trial with the same values
        log.info("No parameter importances: %s", exc)
        return {}


def write_plots(study: optuna.Study, directory: Path) -> list[Path]:
    """Optimisation history, parallel coordinates and a slice per parameter, as PNGs."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from optuna.visualization import matplotlib as vis

    from mlharness.runs.sweep.study import import_optuna

    import_optuna()
    plots: list[tuple[str, Callable[[], Any]]] = [
        ("history.png", lambda: vis.plot_optimization_history(study)),
        ("parallel_coordinates.png", lambda: vis.plot_parallel_coordinate(study)),
    ]
    names = sorted({k for t in study.get_trials(deepcopy=False) for k in t.params})
    for name in names:
        plots.append((f"slice_{name}.png", _slice(vis, study, name)))
    written = []
    for filename, plot in plots:
        written.append(_save(plot, directory / filename))
    return written


def _slice(vis: Any, study: optuna.Study, name: str) -> Callable[[], Any]:
    return lambda: vis.plot_slice(study, params=[name])


def _save(plot: Callable[[], Any], path: Path) -> Path:
    import warnings

    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" warnings of optuna.visualization
        axes = plot()
    figure = getattr(axes, "figure", None) or axes.flat[0].figure
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def export_best(study: optuna.Study, path: Path) -> Path:
    """The best trial's full config (the base with its parameters) as a file ``mlx train``
    and ``mlx run-experiment`` take; named after the base experiment, so it starts anew."""
    import yaml

    from mlharness.config.loading import SUFFIXES

    best = best_trial(study)
    config = dict(best.user_attrs.get("config") or {})
    if not config:
        raise SweepError(f"Trial {best.number} recorded no config; nothing to export.")
    config["name"] = f"{study.user_attrs.get('experiment', study.study_name)}-best"
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt not in ("YAML", "JSON"):
        raise SweepError(f"--export {path}: give a .yaml, .yml or .json file to write.")
    text = dumps(config) if fmt == "JSON" else yaml.safe_dump(config, sort_keys=False)
    atomic_write_text(path, text)
    return path
