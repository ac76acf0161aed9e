"""Who is training a run, and what the next ``mlx train`` does when that process is gone.

The process that trains a run holds an exclusive ``flock`` on ``<run>/run.lock`` for as long
as it trains it (:func:`hold_lock`, taken by :class:`~mlharness.runs.output.OutputManager`).
The kernel drops the lock the moment the process ends, however it ends, SIGKILL included.
So a lock another process can take means the owner is gone, whatever process now has the
old pid. Runs without a lock file (written by an older version) are judged by pid and host.

Before a run starts or resumes, :func:`recover` looks at the experiment's unfinished runs,
newest first:

* owner alive: a run with a checkpoint is not taken over (an error); one without is skipped;
* owner gone: what atomic writes left midway is cleaned up (:func:`clean_run`); a run with
  a complete checkpoint is the one to resume; a run still marked ``running`` without one can
  never resume, so it is marked ``crashed`` in summary.json and in the index, and said once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from mlharness.errors import RunDirectoryError
from mlharness.runs import index
from mlharness.runs.io import atomic_write_json, clean_leftovers

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
# Where the training process alone writes: other commands (mlx sample, mlx eval) write into
# samples/ and eval/ of a run at any time, so their temporary files are not ours to delete.
TRAINER_DIRS = (".", "checkpoints", "metrics")

Owner = Literal["alive", "gone", "unknown"]
T = TypeVar("T")

# The run locks this process holds, by lock path: the open file is the lock.
_held: dict[Path, IO[str]] = {}


def _lock_path(run_dir: Path) -> Path:
    return run_dir.resolve() / LOCK_FILE


def hold_lock(run_dir: Path, wait_s: float = 5.0) -> bool:
    """Take ``run_dir``'s lock for this process, until :func:`release_lock` or its end.

    False when another process holds it (after ``wait_s``, which covers another process's
    brief look under the lock). Within one process the newest owner wins: a process trains
    one run at a time, so an earlier owner here is one that was abandoned.
    """
    path = _lock_path(run_dir)
    earlier = _held.pop(path, None)
    if earlier is not None:
        earlier.close()
    file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held open for the run's life
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            file.close()
            return False
        except OSError:
            pass  # a filesystem without locks: the run is judged by pid and host instead
        _held[path] = file
        return True


def release_lock(run_dir: Path) -> None:
    """Let go of ``run_dir``'s lock (nothing happens if this process does not hold it)."""
    file = _held.pop(_lock_path(run_dir), None)
    if file is not None:
        file.close()


@contextlib.contextmanager
def _probe(run_dir: Path) -> Iterator[bool | None]:
    """Hold the run's lock for the block if its owner is gone.

    Yields True (taken: no process holds it), False (a live process holds it) or None
    (no lock file, or locks do not work on this filesystem: cannot tell).
    """
    path = _lock_path(run_dir)
    if path in _held:
        yield True  # an owner in this very process, which is busy here, not training
        return
    try:
        # r+: never creates a lock file, and opens for writing, which NFS's emulation of
        # flock needs for an exclusive lock.
        file = open(path, "r+", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError:
        yield None
        return
    with file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            taken: bool | None = False
        except OSError:
            taken = None
        else:
            taken = True
        yield taken  # the lock, if taken, goes with the file


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(summary: dict[str, Any], taken: bool | None) -> Owner:
    if taken is False:
        return "alive"
    if summary.get("host", platform.node()) != platform.node():
        return "unknown"  # another machine's process: its lock may not be visible here
    if taken:
        return "gone"
    pid = summary.get("pid")
    alive = isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid)
    return "alive" if summary.get("status") == "running" and alive else "gone"


def read_summary(run_dir: Path) -> dict[str, Any]:
    """``summary.json`` of a run, or an empty dict when it is missing or unreadable."""
    try:
        data = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def clean_run(run_dir: Path) -> list[Path]:
    """Remove the leftovers of atomic writes a killed trainer left in its run directory."""
    return [p for sub in TRAINER_DIRS for p in clean_leftovers(run_dir / sub)]


def mark_crashed(run_dir: Path, output_dir: Path, summary: dict[str, Any]) -> None:
    """Record in summary.json and the index that the run's process died for good."""
    now = datetime.now().isoformat()
    error = (
        f"The process that trained this run (pid {summary.get('pid')} on "
        f"{summary.get('host')}) is gone, and the run has no complete checkpoint to resume from."
    )
    marked = {**summary, "status": "crashed", "error": error, "crashed_at": now}
    atomic_write_json(run_dir / "summary.json", marked)
    index_path = output_dir / index.INDEX_NAME
    if index_path.is_file():
        relative = run_dir.relative_to(output_dir).as_posix()
        index.update_run(index_path, relative, status="crashed", finished_at=now)


def _still_running_in_index(output_dir: Path) -> set[str]:
    """The run directories the index still calls running (none if it cannot be read)."""
    try:
        runs = index.list_all_runs(output_dir / index.INDEX_NAME)
    except RunDirectoryError:
        return set()
    return {str(r.get("run_dir")) for r in runs if r.get("status") == "running"}


def recover(
    output_dir: Path,
    experiment: str,
    kind: str,
    newest_checkpoint: Callable[[Path], T | None],
    *,
    resume: bool = True,
    mismatch: Callable[[Path, T], str | None] | None = None,
) -> tuple[Path, T] | None:
    """Settle the experiment's runs whose process is gone; the run to resume and its checkpoint.

    ``newest_checkpoint(run_dir)``: the engine's newest complete checkpoint of a run, or None.
    ``resume=False`` (``--fresh``) resumes nothing but still cleans and marks dead runs. A
    live process's run is never touched; resuming one that has a checkpoint is an error.
    ``mismatch(run_dir, checkpoint)`` says why a run is not this experiment's to resume
    (another config under the same name): it is passed over and kept, and the reason said.
    """
    parent = output_dir / experiment
    if not parent.is_dir():
        return None
    in_index = _still_running_in_index(output_dir)
    crashed: list[Path] = []
    passed: list[tuple[Path, str]] = []
    found: tuple[Path, T] | None = None
    for run_dir in sorted((p for p in parent.iterdir() if p.is_dir()), reverse=True):
        summary = read_summary(run_dir)
        status, relative = summary.get("status"), run_dir.relative_to(output_dir).as_posix()
        settled = status in ("completed", "crashed")
        if summary.get("kind") != kind or (settled and relative not in in_index):
            continue
        with _probe(run_dir) as taken:
            owner = _owner(summary, taken)
            if owner == "gone":
                _tidy_dead(run_dir, output_dir, summary, relative in in_index)
            if settled:
                continue
            checkpoint = newest_checkpoint(run_dir)
            if resume and checkpoint is not None and mismatch is not None:
                why = mismatch(run_dir, checkpoint)
                if why is not None:
                    passed.append((run_dir, why))
                    continue
            if owner == "alive":
                if resume and checkpoint is not None:
                    raise RunDirectoryError(
                        f"Run {run_dir} is still being trained by process {summary.get('pid')}. "
                        "Wait for it or stop it, or pass --fresh to start a separate run."
                    )
                continue
            if checkpoint is not None:
                if resume:
                    found = (run_dir, checkpoint)
                    break
                continue
            if owner == "gone" and status == "running":
                mark_crashed(run_dir, output_dir, summary)
                crashed.append(run_dir)
    _say(crashed, passed, None if found is None else found[0])
    return found


def _tidy_dead(run_dir: Path, output_dir: Path, summary: dict[str, Any], indexed: bool) -> None:
    """What a dead owner left midway: its leftovers, and an index entry its summary outran."""
    clean_run(run_dir)
    status = summary.get("status")
    if status != "running" and indexed:
        # Killed between writing its summary and the index: the index follows.
        relative = run_dir.relative_to(output_dir).as_posix()
        final = summary.get("final_metrics") or {}
        index.update_run(
            output_dir / index.INDEX_NAME, relative, status=status, final_metrics=final
        )


def _say(crashed: list[Path], passed: list[tuple[Path, str]], resumed: Path | None) -> None:
    """One line for each run :func:`recover` marked crashed or passed over, and what follows."""
    then = "starting a new run" if resumed is None else f"resuming {resumed} instead"
    for run_dir in crashed:
        log.warning(
            "Run %s was left running by a process that is gone and cannot be resumed (no "
            "complete checkpoint): marked crashed; %s.",
            run_dir,
            then,
        )
    for run_dir, why in passed:
        log.warning("Not resuming run %s: %s; %s.", run_dir, why, then)
