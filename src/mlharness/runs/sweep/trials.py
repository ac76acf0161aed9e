"""One trial of a sweep: an ordinary ``mlx run-experiment`` process, watched by the sweep.

The trial's values reach the run as ``MLX_OVERRIDES`` (exact JSON, no re-parsing of
``--set`` text), its sweep and number as ``MLX_SWEEP``/``MLX_SWEEP_TRIAL``
(:mod:`mlharness.runs.tags`), so the run is like any other: its own directory and index
entry, resumable with ``mlx train``, evaluable, comparable. The sweep reads the run's
``metrics.ndjson`` for the pruner and its ``summary.json`` for the objective.

Each trial process is a session of its own, so a Ctrl+C at the terminal reaches the sweep
alone, which then stops every trial with one SIGINT (a second would abandon the save). On
Linux a trial also gets SIGTERM when the sweep process dies, however it dies, and saves.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mlharness.config.loading import OVERRIDES_ENV
from mlharness.runs.io import dumps
from mlharness.runs.tags import SWEEP_ENV, TRIAL_ENV

if TYPE_CHECKING:
    import optuna

_RUN_DIR = re.compile(r"^Run directory: (.+?)(?: \(resumed\))?$", re.MULTILINE)


@dataclass
class TrialRun:
    """A running trial: its Optuna trial, its process and what has been read of its run."""

    trial: optuna.Trial
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    run_dir: Path | None = None
    pruned: bool = False
    stopped: bool = False  # the sweep stopped it (Ctrl+C): retried on the next start
    _offset: int = 0  # bytes of metrics.ndjson already read
    _reported: set[int] = field(default_factory=set)
    _beat: float = 0.0

    @property
    def number(self) -> int:
        return self.trial.number

    def stop(self) -> None:
        """Ask the run to save and end (exit 130), once; the run's own Ctrl+C handling."""
        if self.process.poll() is None and not (self.stopped or self.pruned):
            self.process.send_signal(signal.SIGINT)
        self.stopped = True

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()


def launch(
    trial: optuna.Trial,
    *,
    config: Path,
    overrides: dict[str, Any],
    sweep: str,
    log_path: Path,
    fresh: bool,
    strict: bool,
) -> TrialRun:
    """Start ``mlx run-experiment`` on ``config`` with the trial's ``overrides``."""
    env = {
        **os.environ,
        OVERRIDES_ENV: dumps(overrides, indent=None),
        SWEEP_ENV: sweep,
        TRIAL_ENV: str(trial.number),
    }
    argv = [sys.executable, "-m", "mlharness", "run-experiment", "--config", str(config)]
    argv += ["--fresh"] * fresh + ["--strict"] * strict
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - closed when the trial ends
    process = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_end_with_parent if sys.platform == "linux" else None,
    )
    return TrialRun(trial, process, log_path, log)


def _end_with_parent() -> None:
    """In the child before exec: SIGTERM when the sweep process dies (prctl PDEATHSIG).

    The sweep launches from one thread and holds no locks while it does, so running this
    between fork and exec is safe.
    """
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def watch(run: TrialRun, metric: str, step_key: str, prune: bool, heartbeat_s: int) -> bool:
    """One look at a running trial: heartbeat, run directory, intermediate values and the
    pruner's verdict. True once its process has ended."""
    now = time.monotonic()
    if now - run._beat >= heartbeat_s:
        beat(run.trial)
        run._beat = now
    if run.run_dir is None:
        run.run_dir = find_run_dir(run.log_path)
        if run.run_dir is not None:
            run.trial.set_user_attr("run_dir", str(run.run_dir))
    if prune and run.run_dir is not None and not (run.pruned or run.stopped):
        _report(run, metric, step_key)
        if run.trial.should_prune():
            run.process.send_signal(signal.SIGINT)
            run.pruned = True
    ended = run.process.poll() is not None
    if ended:
        run.log.close()
    return ended


def beat(trial: optuna.Trial) -> None:
    """Record the trial's heartbeat: Optuna beats only inside ``study.optimize``, so a sweep
    that asks and tells beats itself (the storage is the RDBStorage the sweep made)."""
    from optuna.storages._heartbeat import BaseHeartbeat

    storage = trial.study._storage  # Optuna's cache around it, which beats through
    if isinstance(storage, BaseHeartbeat):
        storage.record_heartbeat(trial._trial_id)


def find_run_dir(log_path: Path) -> Path | None:
    """The run directory the trial's run announced on its first lines."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            head = f.read(64 * 1024)
    except OSError:
        return None
    match = _RUN_DIR.search(head)
    return Path(match.group(1)).resolve() if match else None


def _report(run: TrialRun, metric: str, step_key: str) -> None:
    """Hand the pruner each new record that holds the metric (complete lines only)."""
    assert run.run_dir is not None
    path = run.run_dir / "metrics" / "metrics.ndjson"
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < run._offset:  # rewritten on resume: read it again
                run._offset = 0
            f.seek(run._offset)
            data = f.read()
    except OSError:
        return
    complete = data[: data.rfind(b"\n") + 1]
    run._offset += len(complete)
    for line in complete.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        step, value = record.get(step_key), record.get(metric)
        if isinstance(step, int) and isinstance(value, (int, float)) and step not in run._reported:
            run.trial.report(float(value), step)
            run._reported.add(step)


def read_summary(run_dir: Path | None) -> dict[str, Any]:
    """The run's summary.json, or {} when there is none (yet)."""
    if run_dir is None:
        return {}
    try:
        data = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def last_error(log_path: Path) -> str:
    """The run's last ``Error: ...`` line, or the last line of its output."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("Error: ")]
    if errors:
        return errors[-1].removeprefix("Error: ")
    return next((line for line in reversed(lines) if line.strip()), "")
