"""One run directory per run: ``<output_dir>/<experiment>/<YYYYmmdd_HHMMSS[_N]>/``.

The directory is claimed with an atomic ``mkdir``, so two runs started in the same second,
even in different processes, get ``..._1``, ``..._2`` instead of sharing a directory. Runs
that can resume also hold ``run.lock`` while they train (:mod:`mlharness.runs.recovery`).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from mlharness import __version__
from mlharness.config.paths import workspace_root
from mlharness.errors import RunDirectoryError
from mlharness.runs import index, recovery
from mlharness.runs.io import atomic_write_json
from mlharness.runs.tags import run_tags

# crashed: the process died (SIGKILL, power loss) and left nothing to resume from; set by the
# next process that finds the run (runs.recovery), never by the run itself.
STATUSES = ("running", "completed", "failed", "interrupted", "crashed")


class OutputManager:
    """Creates and fills one run directory, and records the run in ``<base_dir>/index.json``.

    The directory and its ``checkpoints/``, ``metrics/`` and ``logs/`` subdirectories exist
    as soon as the manager is constructed, so anything that fails later still leaves a
    run directory whose ``summary.json`` says what happened.

    With ``lock``, the manager holds the run's lock from construction to :meth:`finish`, so
    another process can tell whether the run's owner is alive; resuming a run whose lock
    another process holds is an error, and a resumed run is cleared of the temporary files
    its killed predecessor left.
    """

    def __init__(
        self,
        experiment_name: str,
        base_dir: str | os.PathLike[str] = "outputs",
        maintain_index: bool = True,
        kind: str = "tabular",
        resume_dir: str | os.PathLike[str] | None = None,
        lock: bool = False,
    ) -> None:
        self.experiment_name = experiment_name
        self.base_dir = Path(base_dir)
        self.maintain_index = maintain_index
        self.kind = kind
        self.created_at = datetime.now()
        self._started = time.monotonic()
        self._elapsed_before = 0.0  # a resumed run's time until it stopped: the total goes on
        self.resumed = resume_dir is not None
        # runs.trackers.Tracker objects, opened by lifecycle.open_run and ended by finish; not
        # imported here, because trackers build on this module.
        self.trackers: list[Any] = []
        self.locked = lock
        if resume_dir is not None:
            # Resuming continues in the run's own directory, so one run keeps one history.
            self.run_dir = Path(resume_dir)
            if lock:
                self._lock()
                recovery.clean_run(self.run_dir)
            previous = recovery.read_summary(self.run_dir)
            if "created_at" in previous:
                self.created_at = datetime.fromisoformat(previous["created_at"])
            elapsed = previous.get("elapsed_seconds")
            if isinstance(elapsed, (int, float)) and elapsed >= 0:
                self._elapsed_before = float(elapsed)
        else:
            self.run_dir = self._get_unique_run_dir()
            if lock:
                self._lock()
        for sub in ("checkpoints", "metrics", "logs"):
            (self.run_dir / sub).mkdir(exist_ok=True)
        self.write_summary({"status": "running", "pid": os.getpid(), "host": platform.node()})
        if maintain_index and self.resumed:
            index.update_run(self.index_path, self.relative_run_dir, status="running")
        elif maintain_index:
            try:
                index.add_run(self.index_path, self._index_entry())
            except RunDirectoryError as exc:
                # Never leave a directory that claims to be running when nothing will run.
                self.write_summary({"status": "failed", "error": str(exc)})
                if lock:
                    recovery.release_lock(self.run_dir)
                raise

    def _lock(self) -> None:
        if not recovery.hold_lock(self.run_dir):
            raise RunDirectoryError(
                f"Run {self.run_dir} is being trained by another process (it holds "
                f"{self.run_dir / recovery.LOCK_FILE}). Wait for it or stop it, or pass --fresh "
                "to start a separate run."
            )

    @property
    def index_path(self) -> Path:
        return self.base_dir / index.INDEX_NAME

    @property
    def relative_run_dir(self) -> str:
        return self.run_dir.relative_to(self.base_dir).as_posix()

    def _get_unique_run_dir(self) -> Path:
        parent = self.base_dir / self.experiment_name
        _check_writable(self.base_dir, parent)
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except PermissionError as exc:
            raise _permission_denied(parent) from exc
        stamp = self.created_at.strftime("%Y%m%d_%H%M%S")
        for n in range(10_000):
            candidate = parent / (stamp if n == 0 else f"{stamp}_{n}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            except PermissionError as exc:
                raise _permission_denied(parent) from exc
            return candidate
        raise RunDirectoryError(f"Could not find a free run directory name under {parent}.")

    def get_run_dir(self) -> Path:
        return self.run_dir

    def get_checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def get_metrics_dir(self) -> Path:
        return self.run_dir / "metrics"

    def get_logs_dir(self) -> Path:
        return self.run_dir / "logs"

    def _index_entry(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment_name,
            "timestamp": self.run_dir.name,
            "run_dir": self.relative_run_dir,
            "created_at": self.created_at.isoformat(),
            "kind": self.kind,
            "status": "running",
            **run_tags(),
        }

    def write_config(self, config: dict[str, Any], seeds: dict[str, Any] | None = None) -> Path:
        """Record the resolved config with the provenance needed to reproduce the run."""
        path = self.run_dir / "config.json"
        atomic_write_json(
            path,
            {
                **config,
                "_run": {
                    "kind": self.kind,
                    "mlharness_version": __version__,
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    "numpy": _version_of("numpy"),
                    "git_commit": git_commit(workspace_root()),
                    "seeds": seeds or {},
                    "command": sys.argv,
                    "created_at": self.created_at.isoformat(),
                    **run_tags(),
                },
            },
        )
        return path

    def write_summary(self, summary: dict[str, Any]) -> Path:
        """Write ``summary.json`` (status, final metrics, timings) atomically."""
        status = summary.get("status")
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        path = self.run_dir / "summary.json"
        atomic_write_json(
            path,
            {
                "experiment": self.experiment_name,
                "kind": self.kind,
                "run_dir": str(self.run_dir),
                "created_at": self.created_at.isoformat(),
                "elapsed_seconds": round(
                    self._elapsed_before + time.monotonic() - self._started, 3
                ),
                **summary,
            },
        )
        return path

    def finish(self, summary: dict[str, Any]) -> None:
        """Write the final summary and update this run's index entry with its outcome;
        then the run's lock (if held) is let go."""
        try:
            self.write_summary(summary)
            if self.maintain_index:
                index.update_run(
                    self.index_path,
                    self.relative_run_dir,
                    status=summary["status"],
                    final_metrics=summary.get("final_metrics") or {},
                    finished_at=datetime.now().isoformat(),
                )
        finally:
            if self.locked:
                recovery.release_lock(self.run_dir)


def _check_writable(base_dir: Path, experiment_dir: Path) -> None:
    for path in (base_dir, experiment_dir):
        if path.exists() and not path.is_dir():
            raise RunDirectoryError(
                f"'{path}' is not a directory: runs need a directory there. Move the file away or "
                "set output.directory (or the experiment name) to something else."
            )
    existing = base_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _permission_denied(existing)


def _permission_denied(path: Path) -> RunDirectoryError:
    return RunDirectoryError(
        f"Permission denied: '{path}'. Make it writable (chmod u+w {path}) or set "
        "output.directory to a directory you can write to."
    )


def _version_of(module: str) -> str | None:
    mod = sys.modules.get(module)
    return getattr(mod, "__version__", None) if mod else None


def git_commit(start: Path) -> str | None:
    """The commit checked out in the git work tree containing ``start``, if any (with -dirty)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(start), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(start), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{out}-dirty" if dirty else out or None
