"""The sweep process: up to ``jobs`` trial processes at once until the budget is spent.

One thread does everything (claims, launches, heartbeats, pruning, results), polling its
trials a few times a second: a trial is a process, so there is nothing to gain from
threads, and one thread makes Ctrl+C simple. On Ctrl+C (or SIGTERM) every running trial is
asked to save and stop, each is marked failed and queued again with its parameters, and the
process exits 130; the same command continues the study.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
from typing import TYPE_CHECKING

from mlharness.errors import SweepError
from mlharness.runs.interrupt import GracefulInterrupt
from mlharness.runs.sweep import study as studies
from mlharness.runs.sweep import trials

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

STOP_WAIT_S = 120.0  # how long stopped trials get to save before they are killed


def run_sweep(sweep: studies.Sweep, jobs: int) -> optuna.Study:
    """Run trials until the study holds its budget of finished ones (or time is up)."""
    study = studies.open_study(sweep)
    limit = studies.budget(sweep.spec)
    done = studies.count(study, studies.finished_states())
    log.info(
        "Sweep '%s': %s finished trial(s) of %s; study %s; %d at a time.",
        sweep.name,
        done,
        limit if limit is not None else "no count",
        sweep.storage,
        jobs,
    )
    running: list[trials.TrialRun] = []
    # Ctrl+C and SIGTERM only set a flag, which the loop reads between its steps: a signal
    # raised as KeyboardInterrupt could land inside fork's bookkeeping for a trial's start,
    # where Python prints and drops it, and the sweep would go on.
    with GracefulInterrupt() as stop:
        try:
            _loop(study, sweep, jobs, limit, running, stop)
        except BaseException:
            _stop_all(study, sweep, running)
            raise
    return study


def _loop(
    study: optuna.Study,
    sweep: studies.Sweep,
    jobs: int,
    limit: int | None,
    running: list[trials.TrialRun],
    stop: GracefulInterrupt,
) -> None:
    spec = sweep.spec
    deadline = time.monotonic() + spec.timeout if spec.timeout else None
    prune = spec.pruner != "none"
    failures = 0
    while True:
        if stop.requested:
            raise KeyboardInterrupt
        for run in list(running):
            if trials.watch(run, spec.metric, sweep.step_key, prune, spec.heartbeat_interval):
                running.remove(run)
                failed = studies.settle(study, sweep, run)
                failures = failures + 1 if failed else 0
                if failures >= studies.FAILURES_IN_A_ROW:
                    raise SweepError(
                        f"{failures} trials in a row failed, the last with: "
                        f"{run.trial.user_attrs.get('error')} (log: {run.log_path}); fix the "
                        "base config or the search space, then run the sweep again."
                    )
        out_of_time = deadline is not None and time.monotonic() >= deadline
        full = False
        while not out_of_time and len(running) < jobs:
            trial = studies.claim(study, sweep, limit)
            if trial is None:
                full = True
                break
            started = studies.start(study, sweep, trial)
            if started is not None:
                running.append(started)
        if not running and (out_of_time or (full and _all_finished(study, limit))):
            break
        _wait(running)
    _say_end(study, sweep, out_of_time)


def _wait(running: list[trials.TrialRun]) -> None:
    """Sleep until the next look, or until the oldest trial ends: with ``--jobs 1`` the next
    trial starts as soon as its predecessor is done, not up to a poll period later."""
    if not running:
        time.sleep(studies.POLL_S)
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        running[0].process.wait(timeout=studies.POLL_S)


def _all_finished(study: optuna.Study, limit: int | None) -> bool:
    """The budget is spent; False while other processes still run trials that count."""
    return limit is not None and studies.count(study, studies.finished_states()) >= limit


def _say_end(study: optuna.Study, sweep: studies.Sweep, out_of_time: bool) -> None:
    done = studies.count(study, studies.finished_states())
    why = "time is up" if out_of_time else "the budget is spent"
    log.info("Sweep '%s' ends (%s): %d finished trial(s).", sweep.name, why, done)
    try:
        best = study.best_trial
    except ValueError:
        return
    log.info(
        "Best: trial %d, %s %s, run %s",
        best.number,
        sweep.spec.metric,
        f"{best.value:.6g}",
        best.user_attrs.get("run_dir", "?"),
    )
    log.info("See it all: mlx sweep show %s", sweep.name)


def _stop_all(study: optuna.Study, sweep: studies.Sweep, running: list[trials.TrialRun]) -> None:
    """Stop every running trial (each saves), then tell the study they failed, to retry."""
    if not running:
        return
    log.warning("Stopping %d running trial(s); each saves and is queued again.", len(running))
    for run in running:
        run.stop()
    deadline = time.monotonic() + STOP_WAIT_S
    try:
        for run in running:
            run.process.wait(timeout=max(0.1, deadline - time.monotonic()))
    except BaseException:  # a second Ctrl+C, or a run that would not stop
        for run in running:
            run.kill()
    for run in running:
        run.process.wait()
        run.log.close()
        run.stopped = True
        studies.settle(study, sweep, run)
