"""Tabular runs stopped by Ctrl+C, SIGTERM's kin or a SIGKILL resume with the same command,
in their own run directory, and end bit-identical to a run that never stopped.

Each stop is real and lands in a real ``mlx`` subprocess: Ctrl+C sent from outside, or a
SIGINT or SIGKILL the process sends itself at a chosen call (:func:`e2e_helpers.kill_hook`).
``EVERY_EPOCH`` makes the subprocess write its resume state after every epoch (the default
is at most once a second), so the hooks can count the writes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from e2e_helpers import (
    TIMEOUT,
    Mlx,
    classification,
    error_lines,
    index_runs,
    kill_hook,
    leftovers,
    make_workspace,
    read_json,
    regression,
    run_dirs,
    run_mlx,
    run_mlx_killed,
    single_run_dir,
    write_config,
)

pytestmark = pytest.mark.e2e

EVERY_EPOCH = "import mlharness.tabular.loop as _loop\n_loop.RESUME_INTERVAL_S = 0.0\n"
WRITE_STATE = "mlharness.tabular.resume.write_state"
NAME = "resumable"
FAST = classification(
    name=NAME, training={"epochs": 12, "optimizer": "adam"}, output={"checkpoint_frequency": 5}
)


@dataclass
class Finished:
    """What a run that never stopped ends with."""

    run: Path
    weights: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    summary: dict[str, Any]


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _finished(run: Path) -> Finished:
    final = run / "checkpoints" / "checkpoint_final"
    return Finished(
        run,
        _arrays(final / "weights.npz"),
        _arrays(final / "optimizer.npz"),
        read_json(run / "summary.json"),
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Finished:
    """FAST trained once without a stop."""
    ws = make_workspace(tmp_path_factory.mktemp("reference") / "ws")
    write_config(ws / "c.json", FAST)
    run_mlx(["run-experiment", "--config", "c.json"], workspace=ws, check=0)
    return _finished(single_run_dir(ws, NAME))


def assert_same_as(reference: Finished, run: Path) -> None:
    """``run`` completed bit-identical to ``reference``: weights, optimizer, history."""
    got = _finished(run)
    assert got.weights.keys() == reference.weights.keys()
    for name, array in reference.weights.items():
        assert np.array_equal(got.weights[name], array), name
    for name, array in reference.optimizer.items():
        assert np.array_equal(got.optimizer[name], array), name
    for file in ("metrics.json", "metrics.ndjson"):
        assert (run / "metrics" / file).read_text() == (
            reference.run / "metrics" / file
        ).read_text()
    for key in ("status", "final_metrics", "epochs_completed", "checkpoints"):
        assert got.summary[key] == reference.summary[key], key
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted(
        p.name for p in (reference.run / "checkpoints").iterdir()
    )  # no resume/ left, no checkpoint_interrupted
    assert leftovers(run) == []


def _hooked(mlx: Mlx, hook: str, *args: Any) -> subprocess.CompletedProcess[str]:
    """``mlx ARGS`` with ``hook`` run first, to its end (a SIGINT hook exits 130)."""
    proc = mlx.popen(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, hook=hook)
    out, err = proc.communicate(timeout=TIMEOUT)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _killed(ws: Path, when: str, *args: Any) -> Path:
    """Run ``mlx ARGS`` SIGKILLed right after its resume state write ``when`` is true."""
    run_mlx_killed(args, workspace=ws, hook=EVERY_EPOCH + kill_hook(WRITE_STATE, when))
    return run_dirs(ws, NAME)[-1]


def _resumed_line(run: Path, epoch: int, of: int = 12) -> str:
    return f"Resuming run {run.resolve()} from epoch {epoch} of {of}."


# ----------------------------------------------------------------------------- exactness

STOPS = {
    # Ctrl+C right after epoch 3's state: epoch 4 starts, stops after one batch.
    "sigint-mid-epoch": (kill_hook(WRITE_STATE, "n == 3", signal_name="SIGINT"), 130),
    "sigkill-after-a-state": (kill_hook(WRITE_STATE, "n == 3"), -signal.SIGKILL),
    # Killed inside epoch 4's state write, before its trainer.json: a temporary directory.
    "sigkill-while-writing-a-state": (
        kill_hook("mlharness.tabular.resume.atomic_write_json", "n == 4", before=True),
        -signal.SIGKILL,
    ),
}


@pytest.mark.parametrize("stop", list(STOPS))
def test_a_stopped_run_resumes_in_its_directory_exactly(
    mlx: Mlx, ws: Path, reference: Finished, stop: str
) -> None:
    hook, code = STOPS[stop]
    write_config(ws / "c.json", FAST)
    stopped = _hooked(mlx, EVERY_EPOCH + hook, "run-experiment", "--config", "c.json")
    assert stopped.returncode == code, stopped.stderr
    run = single_run_dir(ws, NAME)
    if stop == "sigint-mid-epoch":
        assert "Interrupted after 3 completed epoch(s)" in stopped.stderr
        assert "The same command resumes it from epoch 3; --fresh starts a new run" in (
            stopped.stderr
        )
        assert (run / "checkpoints" / "checkpoint_interrupted").is_dir()
    if stop == "sigkill-while-writing-a-state":
        assert [p for p in leftovers(run) if p.startswith("checkpoints/.resume.")]

    result = mlx("run-experiment", "--config", "c.json", check=0)
    assert result.stdout.count("Resuming run") == 1
    assert _resumed_line(run, 3) in result.stdout
    assert f"Run directory: {run.resolve()} (resumed)" in result.stdout
    assert single_run_dir(ws, NAME) == run
    assert_same_as(reference, run)
    assert read_json(run / "summary.json")["resumed_at_epoch"] == 3
    [entry] = index_runs(ws)
    assert entry["status"] == "completed"


SLOW = classification(
    name="slow",
    dataset={"params": {"n_samples": 3000, "n_features": 10}},
    model={"params": {"layer_sizes": [10, 64, 3]}},
    training={"epochs": 60, "batch_size": 16},
    output={"checkpoint_frequency": 25},
)


# Each epoch takes at least 50 ms, so SLOW runs for 3 s or more however fast the machine is:
# the first resume state (after 1 s, the default interval) is written well before it ends.
AT_LEAST_50_MS_AN_EPOCH = """
import time
import mlharness.tabular.loop as _loop
_run_epoch = _loop.TrainingLoop._run_epoch
def _slow_epoch(self, *args, **kwargs):
    time.sleep(0.05)
    return _run_epoch(self, *args, **kwargs)
_loop.TrainingLoop._run_epoch = _slow_epoch
"""


def _wait_for_state(ws: Path, name: str, proc: subprocess.Popen[str]) -> Path:
    """The run directory of ``proc`` once it has written a resume state."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        for run in run_dirs(ws, name):
            if (run / "checkpoints" / "resume" / "trainer.json").is_file():
                return run
        time.sleep(0.02)
    raise AssertionError("no resume state written in time")


def test_ctrl_c_from_outside_then_the_same_command_resumes_exactly(mlx: Mlx, ws: Path) -> None:
    """As a person does it: Ctrl+C at any moment, with the default state interval."""
    write_config(ws / "slow.json", SLOW)
    mlx("run-experiment", "--config", "slow.json", check=0)
    reference = _finished(single_run_dir(ws, "slow"))
    with (ws / "out.txt").open("w") as out, (ws / "err.txt").open("w") as err:
        proc = mlx.popen(
            "run-experiment",
            "--config",
            "slow.json",
            stdout=out,
            stderr=err,
            hook=AT_LEAST_50_MS_AN_EPOCH,
        )
        try:
            run = _wait_for_state(ws, "slow", proc)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 130, (ws / "err.txt").read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    epoch = read_json(run / "checkpoints" / "resume" / "trainer.json")["epoch"]
    assert 1 <= epoch < 60
    result = mlx("run-experiment", "--config", "slow.json", check=0)
    assert _resumed_line(run, epoch, 60) in result.stdout
    assert run_dirs(ws, "slow") == [reference.run, run]
    assert_same_as(reference, run)


# ----------------------------------------------------------------------------- what resumes


def test_a_changed_config_or_fresh_starts_a_new_run_and_keeps_the_stopped_one(
    mlx: Mlx, ws: Path, reference: Finished
) -> None:
    write_config(ws / "c.json", FAST)
    stopped = _killed(ws, "n == 2", "run-experiment", "--config", "c.json")

    changed = mlx("run-experiment", "--config", "c.json", "--set", "training.epochs=3", check=0)
    assert (
        f"Warning: Not resuming run {stopped.resolve()}: its config differs from this one "
        "(training.epochs: 12 -> 3); starting a new run." in changed.stderr.splitlines()
    )
    assert "Resuming" not in changed.stdout

    fresh = mlx("run-experiment", "--config", "c.json", "--fresh", check=0)
    assert "Resuming" not in fresh.stdout and "Not resuming" not in fresh.stderr
    runs = run_dirs(ws, NAME)
    assert len(runs) == 3 and runs[0] == stopped
    assert_same_as(reference, runs[2])  # a fresh run is a run that never stopped
    assert read_json(stopped / "summary.json")["status"] == "running"  # left as it was
    assert read_json(stopped / "checkpoints" / "resume" / "trainer.json")["epoch"] == 2

    resumed = mlx("run-experiment", "--config", "c.json", check=0)
    assert _resumed_line(stopped, 2) in resumed.stdout
    assert run_dirs(ws, NAME) == runs
    assert_same_as(reference, stopped)

    again = mlx("run-experiment", "--config", "c.json", check=0)  # completed: never resumed
    assert "Resuming" not in again.stdout
    assert len(run_dirs(ws, NAME)) == 4


def test_mlx_train_resumes_a_tabular_config_and_takes_fresh(
    mlx: Mlx, ws: Path, reference: Finished
) -> None:
    write_config(ws / "c.toml", {**FAST, "kind": "tabular"})
    stopped = _killed(ws, "n == 5", "train", "--config", "c.toml")
    fresh = mlx("train", "--config", "c.toml", "--fresh", check=0)
    assert "Resuming" not in fresh.stdout
    result = mlx("train", "--config", "c.toml", check=0)
    assert _resumed_line(stopped, 5) in result.stdout
    assert len(run_dirs(ws, NAME)) == 2
    assert_same_as(reference, stopped)


def test_a_list_resumes_the_experiment_it_stopped_in(
    mlx: Mlx, ws: Path, reference: Finished
) -> None:
    first = regression(name="first", model={"params": {"use_gradient_descent": False}})
    write_config(ws / "list.yaml", [first, FAST])
    # "first" is a closed-form fit: one epoch, one state; FAST's third state is write 4.
    stopped = _killed(ws, "n == 4", "run-experiment", "--config", "list.yaml")
    assert read_json(single_run_dir(ws, "first") / "summary.json")["status"] == "completed"

    result = mlx("run-experiment", "--config", "list.yaml", check=0)
    assert result.stdout.count("Resuming run") == 1
    assert _resumed_line(stopped, 3) in result.stdout
    assert len(run_dirs(ws, "first")) == 2  # a completed experiment runs anew
    assert run_dirs(ws, NAME) == [stopped]
    assert_same_as(reference, stopped)


def test_a_damaged_resume_state_is_an_error_that_names_fresh(mlx: Mlx, ws: Path) -> None:
    write_config(ws / "c.json", FAST)
    stopped = _killed(ws, "n == 2", "run-experiment", "--config", "c.json")
    state = stopped / "checkpoints" / "resume"
    (state / "model" / "weights.npz").write_bytes(b"not a zip file")
    result = mlx("run-experiment", "--config", "c.json", check=1)
    [line] = error_lines(result.stderr)
    assert line.startswith(f"Error: Cannot resume run {stopped.resolve()} from {state.resolve()}: ")
    assert line.endswith("Start a new run with --fresh.")
    assert read_json(stopped / "summary.json")["status"] == "failed"
    mlx("run-experiment", "--config", "c.json", "--fresh", check=0)
    assert len(run_dirs(ws, NAME)) == 2


def test_a_run_killed_without_checkpoints_is_marked_crashed(mlx: Mlx, ws: Path) -> None:
    """``save_checkpoints: false`` keeps no resume state: nothing to resume from."""
    config = classification(name=NAME, output={"save_checkpoints": False})
    write_config(ws / "c.json", config)
    hook = kill_hook("mlharness.tabular.loop._bar_info", "n == 3")  # after epoch 3
    run_mlx_killed(["run-experiment", "--config", "c.json"], workspace=ws, hook=hook)
    crashed = single_run_dir(ws, NAME)
    result = mlx("run-experiment", "--config", "c.json", check=0)
    assert (
        f"Warning: Run {crashed.resolve()} was left running by a process that is gone and "
        "cannot be resumed (no complete checkpoint): marked crashed; starting a new run."
        in result.stderr.splitlines()
    )
    assert read_json(crashed / "summary.json")["status"] == "crashed"
    assert len(run_dirs(ws, NAME)) == 2


# ----------------------------------------------------------------------------- a live run

BUSY = classification(
    name="busy",
    dataset={"params": {"n_samples": 3000, "n_features": 10}},
    model={"params": {"layer_sizes": [10, 64, 3]}},
    training={"epochs": 5000, "batch_size": 16},
    output={"checkpoint_frequency": 10000},
)


def test_a_run_still_training_is_not_taken_over(mlx: Mlx, ws: Path) -> None:
    write_config(ws / "busy.json", BUSY)
    with (ws / "out.txt").open("w") as out, (ws / "err.txt").open("w") as err:
        proc = mlx.popen(
            "run-experiment", "--config", "busy.json", stdout=out, stderr=err, hook=EVERY_EPOCH
        )
        try:
            run = _wait_for_state(ws, "busy", proc)
            same = mlx("run-experiment", "--config", "busy.json", check=1)
            assert error_lines(same.stderr) == [
                f"Error: Run {run.resolve()} is still being trained by process {proc.pid}. "
                "Wait for it or stop it, or pass --fresh to start a separate run."
            ]
            # Another config under the same name (a sweep) runs beside it.
            other = mlx("run-experiment", "--config", "busy.json", "--set", "training.epochs=2")
            assert other.returncode == 0, other.stderr
            assert f"Not resuming run {run.resolve()}: its config differs" in other.stderr
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 130
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    statuses = {r.name: read_json(r / "summary.json")["status"] for r in run_dirs(ws, "busy")}
    assert statuses == {run.name: "interrupted", run_dirs(ws, "busy")[1].name: "completed"}
    assert json.loads((run / "checkpoints" / "resume" / "trainer.json").read_text())["epoch"] >= 1
