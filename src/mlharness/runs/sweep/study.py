"""A sweep's Optuna study: where it is stored, how trials are claimed, run and told.

The study is the sweep's whole state, so any number of ``mlx sweep`` processes, on one
machine or several, can work on it and a later one continues it. The budget counts
finished trials (complete or pruned) in the study, not trials this process ran: a sweep
killed halfway and started again ends with exactly ``n_trials`` of them. A trial is
claimed (stale trials failed, the budget checked, a trial asked) under a file lock next to
an SQLite study, so two processes never start one trial too many; on a server database
the check is repeated after asking instead.

A trial whose sweep process died keeps state RUNNING until its heartbeat is older than the
grace period; the next process fails it and Optuna's
``RetryHeartbeatStaleTrialCallback`` queues it again with the same parameters and
attributes. The retry runs in the same experiment, so an lm or rl run resumes from its
checkpoint, a tabular one from its last checkpoint, and a run that had already completed
is read, not run again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlharness.config.loading import deep_merge
from mlharness.errors import MlxError, SweepError
from mlharness.runs.sweep import trials
from mlharness.runs.sweep.spec import SweepSpec, nested

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

POLL_S = 0.2  # at most this long between two looks at the running trials
FAILURES_IN_A_ROW = 3  # errors of trial runs before the sweep gives up: a broken base config


@dataclass(frozen=True)
class Sweep:
    """Everything a sweep process needs, resolved by the command before it starts."""

    spec: SweepSpec
    name: str
    config: Path  # the base config file every trial runs
    experiment: str  # the base experiment's name
    base: dict[str, Any]  # its experiment (MLX_OVERRIDES and --set applied), for the trials
    overrides: dict[str, Any]  # MLX_OVERRIDES and --set of the sweep, handed to every trial
    output_dir: Path  # the experiments' output directory
    storage: str  # an Optuna RDB URL
    step_key: str  # the key of the kind's metric records (epoch, iter, step)
    resolve: Callable[[dict[str, Any]], dict[str, Any]]  # raw config -> resolved config
    strict: bool = False

    @property
    def directory(self) -> Path:
        return sweep_dir(self.output_dir, self.name)


def sweep_dir(output_dir: Path, name: str) -> Path:
    """``<output_dir>/sweeps/<name>/``: the default study, the trials' logs, the plots."""
    return output_dir / "sweeps" / name


def default_storage(output_dir: Path, name: str) -> str:
    """An SQLite file in the sweep's directory: nothing to start, moves with the runs."""
    path = sweep_dir(output_dir, name) / "study.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


def import_optuna() -> Any:
    """Optuna, or a SweepError saying how to install it."""
    try:
        import optuna
    except ImportError as exc:
        raise SweepError(
            "mlx sweep needs Optuna, which is not installed: pip install 'mlharness[sweep]' "
            "(or pip install optuna)."
        ) from exc
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats and their retry callback are "experimental" in Optuna's words since 2.8;
    # beating outside study.optimize is what an ask-and-tell sweep of processes has to do.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    return optuna


def storage_for(url: str, spec: SweepSpec | None = None) -> Any:
    """An RDBStorage with heartbeats and retries of stale trials (Optuna's own machinery)."""
    optuna = import_optuna()
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}  # several writers
    if spec is not None:
        kwargs.update(
            heartbeat_interval=spec.heartbeat_interval,
            grace_period=spec.grace_period or 4 * spec.heartbeat_interval,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(spec.max_retry),
        )
    try:
        with _sqlite_lock(url):  # two sweeps starting at once would both create the tables
            storage = _created(RDBStorage, url, kwargs)
    except (ImportError, optuna.exceptions.StorageInternalError, ValueError) as exc:
        raise SweepError(
            f"Cannot open the sweep storage {url} ({exc}); check the URL and that its "
            "database driver is installed."
        ) from exc
    if url.startswith("sqlite"):
        _write_ahead(storage.engine)
    return storage


def _created(rdb_storage: Any, url: str, kwargs: dict[str, Any]) -> Any:
    """The storage, opened again when another process created its tables at the same moment.

    On a server database no file lock orders the sweeps' first start: two machines starting
    at once both create Optuna's tables (and PostgreSQL's enum types), and the slower one
    fails on a duplicate; a second try finds them made.
    """
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for delay in (0.5, 1.5):
        try:
            return rdb_storage(url, **kwargs)
        except (IntegrityError, ProgrammingError):
            if url.startswith("sqlite"):
                raise
            time.sleep(delay)
    return rdb_storage(url, **kwargs)


def _write_ahead(engine: Any) -> None:
    """SQLite in write-ahead-log mode without an fsync per commit.

    A trial makes some twenty commits (ask, attributes, heartbeats, tell); each waited for
    an fsync, a quarter of a second a trial on a busy disk (bench/sweep.py). With WAL and
    ``synchronous=NORMAL`` a crash of any process loses nothing and a power cut at most the
    last commits, which the study survives (a lost trial is run again). WAL needs every
    process on one machine, as SQLite always did: across machines use a server database.
    """
    from sqlalchemy import event

    def pragmas(connection: Any, record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # the connections opened before the listener reconnect with it


def open_study(sweep: Sweep) -> optuna.Study:
    """The sweep's study, created on first use; an existing one must optimise the same way."""
    import_optuna()
    import optuna

    spec = sweep.spec
    study = optuna.create_study(
        study_name=sweep.name,
        storage=storage_for(sweep.storage, spec),
        sampler=make_sampler(spec),
        pruner=make_pruner(spec),
        direction=spec.direction,
        load_if_exists=True,
    )
    recorded = study.direction.name.lower()
    if recorded != spec.direction:
        raise SweepError(
            f"Study '{sweep.name}' in {sweep.storage} was created to {recorded} its metric, "
            f"not to {spec.direction}: use the same direction, or another sweep name."
        )
    study.set_user_attr("metric", spec.metric)
    study.set_user_attr("config", str(sweep.config.resolve()))
    study.set_user_attr("experiment", sweep.experiment)
    return study


def distributions(spec: SweepSpec) -> dict[str, Any]:
    """Optuna's distribution for every searched key."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for key, p in spec.params.items():
        if p.choices is not None:
            out[key] = CategoricalDistribution(p.choices)
        elif p.is_int:
            assert p.low is not None and p.high is not None
            step = int(p.step or 1)
            out[key] = IntDistribution(int(p.low), int(p.high), log=p.log, step=step)
        else:
            assert p.low is not None and p.high is not None
            out[key] = FloatDistribution(float(p.low), float(p.high), log=p.log, step=p.step)
    return out


def grid(spec: SweepSpec) -> dict[str, list[Any]]:
    """Every value of every key, for the grid sampler."""
    out: dict[str, list[Any]] = {}
    for key, p in spec.params.items():
        if p.choices is not None:
            out[key] = list(p.choices)
            continue
        assert p.low is not None and p.high is not None
        step = p.step or 1
        count = int((p.high - p.low) / step + 1e-9) + 1
        values = [p.low + i * step for i in range(count)]
        out[key] = [int(v) for v in values] if p.is_int else [float(v) for v in values]
    return out


def budget(spec: SweepSpec) -> int | None:
    """Finished trials the study ends with: n_trials, else the grid's size, else no count."""
    if spec.n_trials is not None:
        return spec.n_trials
    if spec.sampler == "grid":
        size = 1
        for values in grid(spec).values():
            size *= len(values)
        return size
    return None


def make_sampler(spec: SweepSpec, trials_so_far: int = 0) -> Any:
    """The spec's sampler, seeded with ``seed + trials_so_far``.

    A sampler seeded alike in every process would propose the same values again after a
    restart, and in each of several processes at once; seeded by the trial's place in the
    study, each trial gets its own draw and a rerun of the sweep repeats it.
    """
    from optuna import samplers

    seed = None if spec.seed is None else spec.seed + trials_so_far
    if spec.sampler == "grid":
        return _grid_class()(grid(spec), seed=seed)
    if spec.sampler == "random":
        return samplers.RandomSampler(seed=seed)
    return samplers.TPESampler(seed=seed)


def _grid_class() -> Any:
    from optuna.samplers import GridSampler

    class Grid(GridSampler):
        """Optuna's grid, without its ``study.stop()`` once the grid is spent, which only
        ``study.optimize`` allows: the sweep's budget is the grid's size and ends it."""

        def after_trial(self, *args: Any, **kwargs: Any) -> None:
            pass

    return Grid


def make_pruner(spec: SweepSpec) -> Any:
    from optuna import pruners

    name, options = spec.pruner, spec.pruner_options
    chosen = {
        "none": pruners.NopPruner,
        "median": pruners.MedianPruner,
        "successive_halving": pruners.SuccessiveHalvingPruner,
    }[name]
    try:
        return chosen(**options)
    except (TypeError, ValueError) as exc:
        raise SweepError(
            f"The {name} pruner does not take {options} ({exc}); see Optuna's "
            f"{chosen.__name__} for its options."
        ) from exc


# --------------------------------------------------------------------------- claiming


def finished_states() -> tuple[Any, ...]:
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED)


def count(study: optuna.Study, states: tuple[Any, ...]) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


@contextlib.contextmanager
def _sqlite_lock(url: str) -> Iterator[None]:
    """A file lock beside an SQLite study, for what its processes must do one at a time."""
    if not url.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    with FileLock(url.removeprefix("sqlite:///") + ".lock"):
        yield


def claim(study: optuna.Study, sweep: Sweep, limit: int | None) -> optuna.Trial | None:
    """A new trial (a queued retry first), or None when finished plus running trials fill
    the budget."""
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    taken = (*finished_states(), TrialState.RUNNING)
    with _sqlite_lock(sweep.storage):
        fail_stale_trials(study)
        _fail_unbeaten(study, sweep.spec)
        if limit is not None and count(study, taken) >= limit:
            return None
        if sweep.spec.sampler != "grid":  # the grid draws from the points not yet run
            study.sampler = make_sampler(sweep.spec, len(study.get_trials(deepcopy=False)))
        trial = study.ask(distributions(sweep.spec))
        trials.beat(trial)  # stale only once it stops beating
    if limit is not None and not sweep.storage.startswith("sqlite:///"):
        others = study.get_trials(deepcopy=False, states=taken)
        if sum(t.number < trial.number for t in others) >= limit:  # lost a race: hand it back
            trial.set_user_attr("error", "not run: the budget was spent by other processes")
            study.tell(trial, state=TrialState.FAIL)
            return None
    return trial


def _fail_unbeaten(study: optuna.Study, spec: SweepSpec) -> None:
    """Fail, and queue again, RUNNING trials that never beat and started more than a grace
    period ago.

    Why: a sweep killed between asking for a trial and its first heartbeat (a few
    milliseconds, but a SIGKILL right after a trial ends lands there) leaves a RUNNING trial
    without a heartbeat, which Optuna's fail_stale_trials never judges: the next sweep
    would wait for it forever. A live sweep beats its trial right after asking for it.
    Optuna keeps heartbeats in a table of its own, read here as its _get_stale_trial_ids does.
    """
    import datetime

    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages._rdb.models import TrialHeartbeatModel
    from optuna.trial import TrialState

    backend = getattr(study._storage, "_backend", study._storage)
    if not isinstance(backend, RDBStorage):
        return
    grace = datetime.timedelta(seconds=spec.grace_period or 4 * spec.heartbeat_interval)
    started_before = datetime.datetime.now() - grace  # Optuna's datetime_start: local time
    old = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.datetime_start is not None and t.datetime_start < started_before
    ]
    retry = RetryHeartbeatStaleTrialCallback(spec.max_retry)
    for trial in old:
        with backend.scoped_session() as session:
            if TrialHeartbeatModel.where_trial_id(trial._trial_id, session) is not None:
                continue
        with contextlib.suppress(UpdateFinishedTrialError):  # another sweep failed it first
            if study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                log.info("Trial %d never started (its sweep died): queued again", trial.number)
                retry(study, study._storage.get_trial(trial._trial_id))


# --------------------------------------------------------------------------- running


def experiment_name(sweep: Sweep, trial: optuna.Trial) -> str:
    """``<sweep>-trial-<n>``: each trial its own experiment, so a retry resumes its run."""
    return str(trial.user_attrs.get("experiment") or f"{sweep.name}-trial-{trial.number}")


def start(study: optuna.Study, sweep: Sweep, trial: optuna.Trial) -> trials.TrialRun | None:
    """Launch the trial's run; None when a retried trial's run had already completed."""
    experiment = experiment_name(sweep, trial)
    retry = "experiment" in trial.user_attrs
    if retry and _complete_from_earlier_run(study, sweep, trial, experiment):
        return None
    params = nested(trial.params)
    overrides = deep_merge(deep_merge(sweep.overrides, params), {"name": experiment})
    shown = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    try:
        config = sweep.resolve(deep_merge(sweep.base, overrides))
    except MlxError as exc:  # a value the schema refuses: this trial cannot run
        from optuna.trial import TrialState

        trial.set_user_attr("error", str(exc))
        study.tell(trial, state=TrialState.FAIL)
        raise SweepError(
            f"Trial {trial.number}'s config ({shown}) is invalid: {exc}\nNarrow the search "
            "space (or change the base config) so that every value it holds is valid."
        ) from exc
    trial.set_user_attr("experiment", experiment)
    trial.set_user_attr("config", config)
    trial.set_user_attr("overrides", params)
    log.info("Trial %d started%s: %s", trial.number, " (retry)" * retry, shown)
    return trials.launch(
        trial,
        config=sweep.config,
        overrides=overrides,
        sweep=sweep.name,
        log_path=sweep.directory / "trials" / f"trial-{trial.number}.log",
        fresh=not retry,
        strict=sweep.strict,
    )


def _complete_from_earlier_run(
    study: optuna.Study, sweep: Sweep, trial: optuna.Trial, experiment: str
) -> bool:
    """A retried trial whose run completed after its sweep died: tell its result."""
    parent = sweep.output_dir / experiment
    runs = sorted(p for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
    if not runs or trials.read_summary(runs[-1]).get("status") != "completed":
        return False
    trial.set_user_attr("run_dir", str(runs[-1].resolve()))
    log.info("Trial %d: its run %s completed after its sweep stopped", trial.number, runs[-1])
    _tell_completed(study, sweep, trial, trials.read_summary(runs[-1]))
    return True


def _tell_completed(
    study: optuna.Study, sweep: Sweep, trial: optuna.Trial, summary: dict[str, Any]
) -> None:
    from optuna.trial import TrialState

    metrics = summary.get("final_metrics") or {}
    metric = sweep.spec.metric
    if metric not in metrics:
        study.tell(trial, state=TrialState.FAIL)
        raise SweepError(
            f"Metric '{metric}' is not among the final metrics of trial {trial.number}'s run "
            f"({', '.join(sorted(metrics)) or 'none'}): set the sweep's metric to one of them."
        )
    value = metrics[metric]
    if not isinstance(value, (int, float)):  # NaN is written as null
        trial.set_user_attr("error", f"{metric} is {value} (diverged?)")
        study.tell(trial, state=TrialState.FAIL)
        log.info("Trial %d failed: %s is %s", trial.number, metric, value)
        return
    study.tell(trial, float(value))
    _say_result(study, trial, f"{metric} {_short(value)}")


def _say_result(study: optuna.Study, trial: optuna.Trial, result: str) -> None:
    from optuna.trial import TrialState

    done = count(study, finished_states())
    best = ""
    with contextlib.suppress(ValueError):  # no complete trial yet
        best = f"; best {_short(study.best_value)} (trial {study.best_trial.number})"
    state = study._storage.get_trial(trial._trial_id).state
    word = "pruned" if state == TrialState.PRUNED else "complete"
    log.info("Trial %d %s: %s%s [%d finished]", trial.number, word, result, best, done)


def settle(study: optuna.Study, sweep: Sweep, run: trials.TrialRun) -> bool:
    """Tell the study how an ended trial went; True when its run failed on an error."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    code = run.process.returncode
    if run.run_dir is None:
        run.run_dir = trials.find_run_dir(run.log_path)
    if run.pruned:
        study.tell(run.trial, state=TrialState.PRUNED)
        _say_result(study, run.trial, f"stopped at {sweep.step_key} {_last_step(run.trial)}")
        return False
    summary = trials.read_summary(run.run_dir)
    if code == 0 and summary.get("status") == "completed":
        _tell_completed(study, sweep, run.trial, summary)
        return False
    error = trials.last_error(run.log_path)
    run.trial.set_user_attr("error", error)
    frozen = study.tell(run.trial, state=TrialState.FAIL)
    if run.stopped or code != 1:  # interrupted or killed, not an error of the run: again
        RetryHeartbeatStaleTrialCallback(sweep.spec.max_retry)(study, frozen)
        log.info("Trial %d stopped (exit code %s): queued to run again", run.number, code)
        return False
    log.warning("Trial %d failed: %s (log: %s)", run.number, error, run.log_path)
    return True


def _last_step(trial: optuna.Trial) -> Any:
    values = trial.study._storage.get_trial(trial._trial_id).intermediate_values
    return max(values) if values else "?"


def _short(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
