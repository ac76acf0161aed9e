"""Trackers: where a run's metrics go besides its own files (TensorBoard, MLflow, W&B).

Every kind names them the same way, ``output.trackers``. The run lifecycle opens them with
the run (:func:`mlharness.runs.lifecycle.open_run`), the metrics writer hands each record to
them, and :func:`mlharness.runs.lifecycle.finish` ends them with the run's status and its
files; engines only pass their settings. The name a tracker gives the run on its side (the
MLflow run id, the W&B run id) is kept in the run's ``trackers.json``, so a resumed run goes
on logging to the same tracker run.

A tracker is a helper, not the record: ``metrics/metrics.ndjson`` is. A tracker that fails
mid-run says so once and stops; training goes on. mlflow and wandb are imported only by runs
that ask for them (each costs seconds), so ``mlx --help`` and other runs never wait for them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import re
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, Field, field_validator

from mlharness.config import flatten
from mlharness.errors import ConfigError
from mlharness.runs.io import atomic_write_json
from mlharness.runs.tags import run_tags

if TYPE_CHECKING:
    from mlharness.runs.output import OutputManager

log = logging.getLogger(__name__)

TrackerName = Literal["tensorboard", "mlflow", "wandb"]
STATE_FILE = "trackers.json"
FLUSH_SECS = 5.0  # MLflow metrics are sent in batches: one SQLite commit costs ~30 ms
# The files every tracker keeps of a finished run, relative to the run directory.
RUN_FILES = ("config.json", "summary.json", "metrics/metrics.md", "metrics/curves.png")


def _tensorboard_only() -> list[TrackerName]:
    return ["tensorboard"]


class TrackerSettings(BaseModel):
    """The tracker fields of every kind's ``output`` section."""

    trackers: list[TrackerName] = Field(
        default_factory=_tensorboard_only,
        description="Where metrics go besides the run's own files: `tensorboard` (logs/tb), "
        "`mlflow`, `wandb`; `[]` for none. mlflow and wandb need `pip install "
        '"mlharness[track]"`.',
    )
    mlflow_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI (sqlite:///PATH, http://HOST:PORT, a database URL); "
        "default: sqlite:///<output directory>/mlflow.db. Artifacts of a SQLite store go to "
        "mlartifacts/ beside the database file.",
    )
    mlflow_log_checkpoint: bool = Field(
        default=False, description="Also store a completed run's final checkpoint in MLflow."
    )
    wandb_project: str = Field(default="mlharness", min_length=1, description="W&B project name.")
    wandb_mode: Literal["auto", "online", "offline"] = Field(
        default="auto",
        description="W&B mode; `auto`: online when W&B's server answers, else offline.",
    )

    @field_validator("trackers")
    @classmethod
    def _once_each(cls, names: list[TrackerName]) -> list[TrackerName]:
        return list(dict.fromkeys(names))


class Tracker(Protocol):
    """What the run lifecycle and the metrics writer ask of each tracker."""

    name: str
    failed: bool

    def log(self, metrics: Mapping[str, float], step: int, step_key: str) -> None:
        """Scalars of one record at ``step`` of the kind's step key (epoch, iter, step)."""

    def log_table(
        self, name: str, rows: Sequence[Mapping[str, Any]], step: int, step_key: str
    ) -> None:
        """Rows of one table (GRPO's completions) at ``step``."""

    def finish(self, status: str) -> None:
        """Store the run's files, close, and mark the tracker's run with ``status``."""


# ----------------------------------------------------------------------------- opening


_PACKAGES = {"mlflow": "mlflow", "wandb": "wandb"}


def require_packages(settings: TrackerSettings) -> None:
    """Fail before a run starts when a tracker's package is missing (no import: cheap)."""
    for name in settings.trackers:
        module = _PACKAGES.get(name)
        if module is not None and not _installed(module):
            raise ConfigError(
                f"output.trackers names {name}, but {module} is not installed: pip install "
                f'"mlharness[track]", or remove {name} from output.trackers.'
            )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken installation is no installation
        return False


def open_trackers(settings: TrackerSettings, output: OutputManager) -> list[Tracker]:
    """The run's trackers, started (or, for a resumed run, continued)."""
    state = read_state(output.run_dir)
    opened: list[Tracker] = []
    for name in settings.trackers:
        if name == "tensorboard":
            opened.append(TensorBoardTracker(output.get_logs_dir() / "tb"))
            continue
        try:
            if name == "mlflow":
                opened.append(MlflowTracker(settings, output, state.get("mlflow", {})))
            else:
                opened.append(WandbTracker(settings, output, state.get("wandb", {})))
        except Exception as exc:
            raise ConfigError(_cannot_open(name, settings, exc)) from exc
    return opened


def _cannot_open(name: str, settings: TrackerSettings, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if name == "mlflow":
        uri = settings.mlflow_uri or "the default SQLite store"
        return (
            f"MLflow could not open {uri} ({first}): set output.mlflow_uri to a tracking URI "
            "it can reach, or remove mlflow from output.trackers."
        )
    return (
        f"W&B could not start a run ({first}): set output.wandb_mode to offline, or remove "
        "wandb from output.trackers."
    )


def read_state(run_dir: Path) -> dict[str, Any]:
    """``trackers.json``: the tracker runs this run logs to; ``{}`` when it has none yet."""
    path = run_dir / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _remember(run_dir: Path, name: str, entry: dict[str, Any]) -> None:
    atomic_write_json(run_dir / STATE_FILE, {**read_state(run_dir), name: entry})


def call_each(trackers: Sequence[Tracker], method: str, *args: Any) -> None:
    """``tracker.method(*args)`` on each working tracker; one that fails is stopped, once."""
    for tracker in trackers:
        if tracker.failed:
            continue
        try:
            getattr(tracker, method)(*args)
        except Exception as exc:
            tracker.failed = True
            log.warning(
                "%s stopped logging this run (%s: %s); the run's own metrics files have "
                "every record.",
                tracker.name,
                type(exc).__name__,
                exc,
            )


# ----------------------------------------------------------------------------- helpers


def scalars(record: Mapping[str, Any], skip: str = "") -> dict[str, float]:
    """The finite numbers of ``record`` (bools are not scalars), ``skip`` left out."""
    return {
        k: float(v)
        for k, v in record.items()
        if k != skip
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
    }


def _run_config(run_dir: Path) -> dict[str, Any]:
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _final_checkpoint(run_dir: Path) -> Path | None:
    """Tabular's ``checkpoint_final``, else the newest lm/rl checkpoint."""
    from mlharness.runs.checkpoints import newest_checkpoint

    final = run_dir / "checkpoints" / "checkpoint_final"
    if final.is_dir():
        return final
    found = newest_checkpoint(run_dir)
    return found.path if found is not None else None


# ----------------------------------------------------------------------------- TensorBoard


def tensorboard_tag(key: str) -> str:
    """``loss`` → ``train/loss``, ``val_loss`` → ``val/loss``; tags with a slash stay as is."""
    if "/" in key:
        return key
    if key.startswith("val_"):
        return "val/" + key[4:]
    return "train/" + key


class TensorBoardTracker:
    """Scalars in ``logs/tb`` (each start or resume adds an event file; TensorBoard merges)."""

    name = "TensorBoard"

    def __init__(self, logdir: Path) -> None:
        from mlharness.runs.tensorboard import ScalarWriter

        self.failed = False
        self.writer = ScalarWriter(logdir)

    def log(self, metrics: Mapping[str, float], step: int, step_key: str) -> None:
        self.writer.add_scalars({tensorboard_tag(k): v for k, v in metrics.items()}, step)

    def log_table(
        self, name: str, rows: Sequence[Mapping[str, Any]], step: int, step_key: str
    ) -> None:
        return None  # scalars only: the rows are in the run's samples/

    def finish(self, status: str) -> None:
        self.writer.close()


# ----------------------------------------------------------------------------- MLflow

_MLFLOW_STATUS = {"completed": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}


def sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a SQLite URI (a relative one is relative to the current directory,
    as SQLite takes it); None for any other store."""
    return Path(uri[len("sqlite:///") :]).resolve() if uri.startswith("sqlite:///") else None


def _mlflow_key(key: str) -> str:
    """MLflow takes letters, digits, ``_ - . : /`` and spaces in names, 250 at most."""
    return re.sub(r"[^\w\-.:/ ]", "_", key)[:250]


def _param_text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class MlflowTracker:
    """One MLflow run per mlharness run: params, tags, metrics by step, files at the end."""

    name = "MLflow"

    def __init__(self, settings: TrackerSettings, output: OutputManager, state: dict[str, Any]):
        from filelock import FileLock
        from mlflow.tracking import MlflowClient

        self.failed = False
        self.run_dir = output.run_dir
        self.log_checkpoint = settings.mlflow_log_checkpoint
        self.uri = settings.mlflow_uri or sqlite_uri(output.base_dir / "mlflow.db")
        self.pending: list[Any] = []
        self.flushed = time.monotonic()
        db = _sqlite_path(self.uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
            if not db.exists():
                log.info("MLflow: creating its SQLite store %s (once: it takes seconds)", db)
        # A new SQLite store is created by migrations that two processes (a sweep's trials)
        # must not run at once; the experiment is made once too.
        with FileLock(f"{db}.lock") if db is not None else contextlib.nullcontext():
            self.client = MlflowClient(tracking_uri=self.uri)
            self.experiment_id = self._experiment(output.experiment_name, db)
            self.run_id = self._continue(state) or self._start(output)
        _remember(self.run_dir, "mlflow", {"tracking_uri": self.uri, "run_id": self.run_id})

    def _experiment(self, name: str, db: Path | None) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return str(found.experiment_id)
        location = (db.parent / "mlartifacts").as_uri() if db is not None else None
        try:
            return str(self.client.create_experiment(name, artifact_location=location))
        except MlflowException:  # another process made it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    def _continue(self, state: dict[str, Any]) -> str | None:
        """The run this run logged to before it stopped, running again; None if gone."""
        from mlflow.exceptions import MlflowException

        run_id = state.get("run_id")
        if not run_id or state.get("tracking_uri") != self.uri:
            return None
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            log.warning(
                "MLflow run %s is gone from %s: this run starts a new one.", run_id, self.uri
            )
            return None
        if run.info.lifecycle_stage == "deleted":
            return None
        self.client.update_run(run_id, status="RUNNING")
        return str(run_id)

    def _start(self, output: OutputManager) -> str:
        from mlflow.entities import Param

        config = _run_config(self.run_dir)
        provenance = config.pop("_run", {})
        commit = provenance.get("git_commit") if isinstance(provenance, dict) else None
        tags = {
            "kind": output.kind,
            "experiment": output.experiment_name,
            "run_dir": str(self.run_dir.resolve()),
            **run_tags(),
        }
        if commit:
            tags |= {"git_commit": commit, "mlflow.source.git.commit": commit.split("-")[0]}
        run = self.client.create_run(self.experiment_id, run_name=self.run_dir.name, tags=tags)
        limit = _param_limit()
        seeds = provenance.get("seeds", {}) if isinstance(provenance, dict) else {}
        flat = {**flatten(config), **flatten({"seeds": seeds})}
        params = [Param(_mlflow_key(k), _param_text(v, limit)) for k, v in flat.items()]
        for i in range(0, len(params), 100):  # MLflow takes 100 params a call
            self.client.log_batch(run.info.run_id, params=params[i : i + 100])
        return str(run.info.run_id)

    def log(self, metrics: Mapping[str, float], step: int, step_key: str) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(_mlflow_key(k), v, now, step) for k, v in metrics.items()]
        if time.monotonic() - self.flushed >= FLUSH_SECS or len(self.pending) >= 1000:
            self.flush()

    def flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:1000], self.pending[1000:]
            self.client.log_batch(self.run_id, metrics=batch)
        self.flushed = time.monotonic()

    def log_table(
        self, name: str, rows: Sequence[Mapping[str, Any]], step: int, step_key: str
    ) -> None:
        table = {step_key: step, "rows": [dict(r) for r in rows]}
        self.client.log_dict(self.run_id, table, f"tables/{name}_{step:08d}.json")

    def finish(self, status: str) -> None:
        self.flush()
        for name in RUN_FILES:
            path = self.run_dir / name
            if path.is_file():
                folder = str(Path(name).parent)
                self.client.log_artifact(self.run_id, str(path), None if folder == "." else folder)
        checkpoint = _final_checkpoint(self.run_dir) if self.log_checkpoint else None
        if checkpoint is not None and status == "completed":
            self.client.log_artifacts(
                self.run_id, str(checkpoint), f"checkpoints/{checkpoint.name}"
            )
        self.client.set_terminated(self.run_id, _MLFLOW_STATUS.get(status, "FAILED"))
        log.info("MLflow: %s", self.where())

    def where(self) -> str:
        """How a person opens this run: the UI command for a SQLite store, else its URL."""
        if self.uri.startswith("sqlite:"):
            hint = ""
            if importlib.util.find_spec("flask") is None:
                hint = " (the UI is in the full package: pip install mlflow)"
            return f"mlflow ui --backend-store-uri {self.uri}{hint}"
        if self.uri.startswith(("http://", "https://")):
            base = self.uri.rstrip("/")
            return f"{base}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        return f"run {self.run_id} in {self.uri}"


def _param_limit() -> int:
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
    except ImportError:
        return 6000
    return int(MAX_PARAM_VAL_LENGTH)


# ----------------------------------------------------------------------------- W&B


def _wandb_online() -> bool:
    """W&B's API host answers within a second, and there is a key to use it with."""
    if not os.environ.get("WANDB_API_KEY") and not (Path.home() / ".netrc").is_file():
        return False
    try:
        socket.create_connection(("api.wandb.ai", 443), timeout=1.0).close()
    except OSError:
        return False
    return True


class WandbTracker:
    """A W&B run, offline when no server answers (``wandb sync`` uploads it later).

    The step key (epoch, iter, step) is W&B's x axis for every metric, so records that a
    resumed run trains again are drawn at their own step instead of being refused.
    """

    name = "W&B"

    def __init__(self, settings: TrackerSettings, output: OutputManager, state: dict[str, Any]):
        import wandb

        self.failed = False
        self.run_dir = output.run_dir
        self.step_key: str | None = None
        mode = settings.wandb_mode
        if mode == "auto":
            mode = "online" if _wandb_online() else "offline"
        tags = run_tags()
        previous = state.get("id") if state.get("project") == settings.wandb_project else None
        directory = self.run_dir / "logs"
        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=settings.wandb_project,
            name=f"{output.experiment_name}/{self.run_dir.name}",
            dir=str(directory),
            mode=mode,
            config=_run_config(self.run_dir),
            id=previous,
            resume="allow" if previous else None,
            group=tags.get("sweep"),
            job_type=output.kind,
            tags=[output.kind, *(f"{k}:{v}" for k, v in tags.items())],
        )
        _remember(self.run_dir, "wandb", {"id": self.run.id, "project": settings.wandb_project})

    def _x_axis(self, step_key: str) -> None:
        if self.step_key is None:
            self.step_key = step_key
            self.run.define_metric(step_key)
            self.run.define_metric("*", step_metric=step_key)

    def log(self, metrics: Mapping[str, float], step: int, step_key: str) -> None:
        self._x_axis(step_key)
        self.run.log({**metrics, step_key: step})

    def log_table(
        self, name: str, rows: Sequence[Mapping[str, Any]], step: int, step_key: str
    ) -> None:
        import wandb

        self._x_axis(step_key)
        flat = [flatten(r) for r in rows]
        columns = list(dict.fromkeys(k for r in flat for k in r))
        data = [[r.get(c) for c in columns] for r in flat]
        table = wandb.Table(columns=list[str | int](columns), data=data)  # pyright: ignore[reportArgumentType]
        self.run.log({name: table, step_key: step})

    def finish(self, status: str) -> None:
        for name in RUN_FILES:
            path = self.run_dir / name
            if path.is_file():
                self.run.save(str(path), base_path=str(self.run_dir), policy="now")
        offline = self.run.settings.mode == "offline"
        where = Path(self.run.dir).parent
        self.run.finish(exit_code=0 if status == "completed" else 1)
        if offline:
            log.info("W&B: offline run in %s; upload it with: wandb sync %s", where, where)
        else:
            log.info("W&B: %s", self.run.url)
