"""Ctrl+C (SIGINT) and SIGTERM stop a run cleanly: exit 130, everything so far kept."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from e2e_helpers import Mlx, index_runs, read_json, regression, run_dirs, write_config

# An MLP on a few thousand samples for many epochs: minutes if nobody stops it.
LONG = regression(
    name="long-run",
    dataset={"params": {"n_samples": 4000, "n_features": 20, "seed": 0}},
    model={"name": "mlp", "params": {"layer_sizes": [20, 64, 64, 1], "activation": "tanh"}},
    training={"epochs": 5000, "batch_size": 16, "optimizer": "adam", "learning_rate": 0.001},
    output={"checkpoint_frequency": 10000},
)


def wait_for_first_epoch(ws: Path, proc: subprocess.Popen[str], timeout: float = 60) -> Path:
    """The run directory, once metrics.ndjson holds at least one complete line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        for run in run_dirs(ws, "long-run"):
            ndjson = run / "metrics" / "metrics.ndjson"
            if ndjson.is_file() and ndjson.read_text().count("\n") >= 1:
                return run
        time.sleep(0.05)
    raise AssertionError("no epoch finished in time")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_the_run_cleanly(mlx: Mlx, ws: Path, signum: signal.Signals) -> None:
    write_config(ws / "long.json", LONG)
    with (ws / "out.txt").open("w") as out, (ws / "err.txt").open("w") as err:
        proc = mlx.popen("run-experiment", "--config", "long.json", stdout=out, stderr=err)
        try:
            run = wait_for_first_epoch(ws, proc)
            proc.send_signal(signum)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = (ws / "err.txt").read_text()
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert "Interrupted after" in stderr

    summary = read_json(run / "summary.json")
    assert summary["status"] == "interrupted"
    lines = (run / "metrics" / "metrics.ndjson").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is whole
    assert 1 <= len(records) < 5000
    assert [r["epoch"] for r in records] == list(range(1, len(records) + 1))
    assert summary["epochs_completed"] == len(records)
    assert read_json(run / "metrics" / "metrics.json")["metrics"] == records
    assert (run / "checkpoints" / "checkpoint_interrupted" / "model.json").is_file()
    [entry] = index_runs(ws)
    assert entry["status"] == "interrupted"

    if signum == signal.SIGINT:  # the kept checkpoint is usable
        result = mlx(
            "eval", "--run-dir", run, "--checkpoint", "checkpoint_interrupted", "--metrics", "mse"
        )
        assert result.returncode == 0, result.stderr
        assert "Checkpoint `checkpoint_interrupted`" in result.stdout
