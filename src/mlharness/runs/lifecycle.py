"""The life of a run, the same for every engine: opened, found again, stopped, ended.

Engines call these instead of each writing its own:

* :func:`find_resumable`: which unfinished run to resume, after settling those whose
  process is gone (:mod:`mlharness.runs.recovery`);
* :func:`open_run`: claim the run directory (or reclaim it on resume) and snapshot the
  resolved config of a new run;
* :func:`guarded`: Ctrl+C and SIGTERM ask the loop to stop at a safe point; an exception,
  a second Ctrl+C included, ends the run ``interrupted`` or ``failed`` and propagates;
* :func:`finish`: the summary every kind writes, with one set of statuses;
* :func:`keep_history`, :func:`rng_state`, :func:`set_rng_state`: what a resumed run keeps
  of its metrics, and the random state a checkpoint carries so it repeats exactly.

torch is imported only by the functions that touch its RNG.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mlharness.errors import CheckpointError
from mlharness.runs import recovery
from mlharness.runs.checkpoints import CheckpointInfo, newest_checkpoint
from mlharness.runs.device import Dist, broadcast_object, gather_objects
from mlharness.runs.interrupt import GracefulInterrupt
from mlharness.runs.io import atomic_write_text, dumps
from mlharness.runs.output import OutputManager
from mlharness.runs.trackers import TrackerSettings, call_each, open_trackers, require_packages

log = logging.getLogger(__name__)

# The statuses a run gives itself in summary.json; "running" is written when it opens, and
# "crashed" only ever by the next process that finds it dead (runs.recovery).
COMPLETED = "completed"
INTERRUPTED = "interrupted"
FAILED = "failed"

Failure = Callable[[str, str], object]
"""What an engine does when its run ends in an exception: called with (status, error)."""


def open_run(
    experiment: str,
    output_dir: Path,
    kind: str,
    *,
    resume_dir: Path | None = None,
    config: dict[str, Any] | None = None,
    seeds: dict[str, Any] | None = None,
    lock: bool = True,
    trackers: TrackerSettings | None = None,
) -> OutputManager:
    """The run directory (a new one, or ``resume_dir``), marked running in the index.

    A new run records ``config``, the resolved config, with ``seeds`` and the provenance
    :meth:`OutputManager.write_config` adds; a resumed run keeps the one it started with.
    With ``lock`` the process holds ``run.lock`` until :func:`finish`. The ``trackers`` the
    settings name are opened as ``output.trackers`` (a missing package fails before the run
    directory is made) and ended by :func:`finish`.
    """
    if trackers is not None:
        require_packages(trackers)
    output = OutputManager(experiment, output_dir, kind=kind, resume_dir=resume_dir, lock=lock)
    if resume_dir is None and config is not None:
        output.write_config(config, seeds=seeds)
    if trackers is not None:
        try:
            output.trackers = open_trackers(trackers, output)
        except BaseException as exc:
            finish(output, FAILED, error=describe_error(exc))
            raise
    # Said as the run starts, for every kind, so that `tail -f` on its files can begin now.
    log.info("Run directory: %s%s", output.run_dir, " (resumed)" if resume_dir else "")
    return output


def describe_error(exc: BaseException) -> str:
    """``RuntimeError: disk full``; a bare ``KeyboardInterrupt`` for an empty message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def guarded(on_failure: Failure) -> Iterator[GracefulInterrupt]:
    """The block trains; ``stop.requested`` turns true on the first Ctrl+C or SIGTERM.

    The loop checks the flag at safe points, saves and returns normally (the engine then
    finishes the run as :data:`INTERRUPTED`). Any exception, a second signal's
    ``KeyboardInterrupt`` included, calls ``on_failure(status, error)`` with
    :data:`INTERRUPTED` or :data:`FAILED` and propagates.
    """
    try:
        with GracefulInterrupt() as stop:
            yield stop
    except BaseException as exc:
        status = INTERRUPTED if isinstance(exc, KeyboardInterrupt) else FAILED
        on_failure(status, describe_error(exc))
        raise


def finish(
    output: OutputManager,
    status: str,
    final_metrics: dict[str, Any] | None = None,
    *,
    error: str | None = None,
    resumed_from: Path | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Write the run's final summary (and index entry) and let go of its lock.

    ``extra`` holds what a kind adds (epochs completed, the resolved seed); ``error`` and
    ``resumed_from`` are recorded when given.
    """
    summary: dict[str, Any] = {"status": status}
    if final_metrics is not None:
        summary["final_metrics"] = final_metrics
    summary.update(extra)
    if error:
        summary["error"] = error
    if resumed_from is not None:
        summary["resumed_from"] = str(resumed_from)
    output.finish(summary)
    call_each(output.trackers, "finish", status)  # after summary.json, which they keep too
    output.trackers = []
    return summary


def find_resumable(
    output_dir: Path, experiment: str, kind: str, *, fresh: bool = False
) -> tuple[Path, CheckpointInfo] | None:
    """The latest unfinished run of ``experiment`` and its newest checkpoint, if any.

    A run whose process is still alive is not taken over: that is an error the user
    resolves (wait, stop it, or ``--fresh``). Dead runs are settled first, ``fresh`` or
    not: see :func:`mlharness.runs.recovery.recover`.
    """
    return recovery.recover(output_dir, experiment, kind, newest_checkpoint, resume=not fresh)


def follow_resume(
    found: tuple[Path, CheckpointInfo] | None,
    output_dir: Path,
    experiment: str,
    dist: Dist,
    *,
    fresh: bool = False,
) -> tuple[Path, CheckpointInfo] | None:
    """Rank 0's choice of run to resume, found by every process under its own output directory.

    Machines without a shared file system each keep the run in their own output directory, at
    the same place under it (docs/lm.md, "Many processes and machines"): a process takes
    rank 0's run and checkpoint names, not its path. Where the machines disagree (a process
    lacks rank 0's checkpoint, or holds an unfinished run while rank 0 found none) every
    process stops with the same message before anything is loaded or written, instead of
    training a new run on one machine while another holds the one to resume.
    """
    found = broadcast_object(found, dist)
    if not dist.enabled:
        return found
    host = f"process {dist.rank} on {socket.gethostname()}"
    if found is None:
        mine = None if dist.master or fresh else _unfinished_run(output_dir / experiment)
        held = [h for h in gather_objects(mine and f"{host} has {mine}", dist) if h]
        if held:
            raise CheckpointError(
                f"Rank 0 found no unfinished run of '{experiment}' in its output directory, "
                f"but {', '.join(held)} in its own: copy that run directory to every machine's "
                "output directory (or share one) and run the same command again, or start "
                "anew with --fresh."
            )
        return None
    run_dir, info = found
    if not dist.master:
        run_dir = output_dir / experiment / run_dir.name
        info = dataclasses.replace(info, path=run_dir / "checkpoints" / info.path.name)
    mine = None if info.path.is_dir() else f"{host} ({run_dir})"
    lacking = [where for where in gather_objects(mine, dist) if where]
    if lacking:
        raise CheckpointError(
            f"Cannot resume {run_dir.name} of '{experiment}' from {info.path.name}: "
            f"{', '.join(lacking)} does not have that run in its output directory, so copy the "
            "run directory there from the machine that wrote it (or share one output "
            "directory) and run the same command again, or start anew with --fresh."
        )
    return run_dir, info


def _unfinished_run(parent: Path) -> str | None:
    """The newest run under ``parent`` that stopped with a checkpoint to resume from, read only
    (rank 0 alone settles dead runs, in :func:`find_resumable`)."""
    runs = sorted(p for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
    for run_dir in reversed(runs):
        status = recovery.read_summary(run_dir).get("status")
        if status in ("running", FAILED, INTERRUPTED) and newest_checkpoint(run_dir):
            return run_dir.name
    return None


def say_resuming(checkpoint: Path, step: int, unit: str) -> None:
    """The resume line; a run stopped before its first trained checkpoint is said to be one.

    Resuming it is the same as starting over, but in the stopped run's directory: without
    this line a user who expected progress would see training begin again at 0 unexplained.
    """
    if step == 0:
        log.info(
            "Resuming from %s at %s 0: the run stopped before it saved a trained checkpoint, "
            "so its training starts from the beginning (in the same run directory).",
            checkpoint,
            unit,
        )
    else:
        log.info("Resuming from %s at %s %d", checkpoint, unit, step)


def keep_history(metrics_dir: Path, upto: int, key: str = "iter") -> list[dict[str, Any]]:
    """On resume: the records the checkpoint covers (``key`` <= upto); later ones are redone."""
    path = metrics_dir / "metrics.ndjson"
    kept: list[dict[str, Any]] = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by the kill
            if isinstance(record, dict) and record.get(key, 0) <= upto:
                kept.append(record)
    atomic_write_text(path, "".join(dumps(r, indent=None) + "\n" for r in kept))
    return kept


def rng_state() -> dict[str, Any]:
    """torch's global RNG (and every CUDA device's), for a checkpoint's trainer state."""
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
