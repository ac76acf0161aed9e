"""``mlx sweep`` end to end: Optuna studies whose trials are real ``mlx`` runs.

Tiny tabular regressions (a few seconds a trial); the study is read back with Optuna
itself and the runs through the run index, so a trial counted twice or a run duplicated
shows in both.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from e2e_helpers import Mlx, error_lines, index_runs, read_json, regression, write_config

optuna = pytest.importorskip("optuna")

# Too small a learning rate for 3 epochs: the sweep has room to do better.
BASE = regression(
    name="sw",
    training={"epochs": 3, "learning_rate": 0.001},
    output={"checkpoint_frequency": 1, "tensorboard": False},
)
SPACE: dict[str, Any] = {
    "metric": "val_mse",
    "direction": "minimize",
    "sampler": "random",
    "seed": 0,
    "heartbeat_interval": 1,
    "grace_period": 2,
    "params": {"training.learning_rate": {"low": 0.001, "high": 0.3, "log": True}},
}


def sweep_config(ws: Path, **settings: Any) -> str:
    return write_config(ws / "sweep.yaml", {**BASE, "sweep": {**SPACE, **settings}})


def study(ws: Path, name: str = "sw") -> Any:
    url = f"sqlite:///{ws / 'runs' / 'sweeps' / name / 'study.db'}"
    return optuna.load_study(study_name=name, storage=url)


def states(ws: Path) -> list[str]:
    return [t.state.name for t in study(ws).trials]


def sweep_runs(ws: Path) -> list[dict[str, Any]]:
    return [r for r in index_runs(ws) if r.get("sweep") == "sw"]


def assert_one_run_per_trial(ws: Path, budget: int) -> None:
    """Every trial experiment has one run, and the completed runs are the budget."""
    runs = sweep_runs(ws)
    experiments = [r["experiment"] for r in runs]
    assert len(experiments) == len(set(experiments)), experiments
    assert sum(r["status"] == "completed" for r in runs) == budget
    done = [t for t in study(ws).trials if t.state.name == "COMPLETE"]
    assert len(done) == budget
    assert len({t.user_attrs["run_dir"] for t in done}) == budget


def test_sweep_finds_a_better_config_and_shows_it(mlx: Mlx, ws: Path) -> None:
    base = write_config(ws / "base.yaml", BASE)
    mlx("run-experiment", "-c", base, check=0)
    base_mse = index_runs(ws)[0]["final_metrics"]["val_mse"]

    out = mlx("sweep", "-c", sweep_config(ws, n_trials=12), "--jobs", "2", check=0).stdout
    assert "ends (the budget is spent): 12 finished" in out
    trials = study(ws).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 12
    assert study(ws).best_value < base_mse / 2
    runs = sweep_runs(ws)
    assert sorted(int(r["trial"]) for r in runs) == list(range(12))
    best = study(ws).best_trial
    config = read_json(Path(best.user_attrs["run_dir"]) / "config.json")
    assert config["training"]["learning_rate"] == best.params["training.learning_rate"]
    assert config["_run"]["sweep"] == "sw" and config["_run"]["trial"] == str(best.number)

    shown = mlx("sweep", "show", "sw", "--export", "best.yaml", check=0).stdout
    assert f"## Best: trial {best.number}" in shown and "## Parameter importances" in shown
    plots = ws / "runs" / "sweeps" / "sw" / "plots"
    names = ["history.png", "parallel_coordinates.png", "slice_training.learning_rate.png"]
    assert sorted(p.name for p in plots.iterdir()) == sorted(names)
    exported = yaml.safe_load((ws / "best.yaml").read_text(encoding="utf-8"))
    assert exported["training"]["learning_rate"] == best.params["training.learning_rate"]
    assert exported["name"] == "sw-best"
    mlx("run-experiment", "-c", "best.yaml", "--dry-run", check=0)


def _wait_for(path: Path, text: str, count: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while path.read_text(encoding="utf-8").count(text) < count:
        assert process.poll() is None, path.read_text(encoding="utf-8")
        assert time.monotonic() < deadline, path.read_text(encoding="utf-8")
        time.sleep(0.1)


def test_killed_sweep_continues_to_exactly_the_budget(mlx: Mlx, ws: Path) -> None:
    config = sweep_config(ws, n_trials=4)
    log = ws / "first.log"
    with open(log, "w", encoding="utf-8") as out:
        first = mlx.popen("sweep", "-c", config, "--jobs", "2", stdout=out, stderr=out)
        _wait_for(log, " complete: ", 1, first)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert "RUNNING" in states(ws)  # left behind by the killed sweep

    mlx("sweep", "-c", config, "--jobs", "2", check=0)
    assert states(ws).count("COMPLETE") == 4
    assert "RUNNING" not in states(ws)
    assert_one_run_per_trial(ws, 4)
    retried = [t for t in study(ws).trials if "failed_trial" in t.system_attrs]
    assert retried and all(t.state.name == "COMPLETE" for t in retried)


def test_a_trial_asked_but_never_beaten_is_failed_and_run_again(mlx: Mlx, ws: Path) -> None:
    """A sweep SIGKILLed between asking for a trial and its first heartbeat leaves a RUNNING
    trial that Optuna's stale-trial check never judges: the next sweep fails and reruns it
    instead of waiting for it forever (CI caught the wait)."""
    mlx("sweep", "-c", sweep_config(ws, n_trials=1), check=0)
    study(ws).ask()  # RUNNING, never beaten: what the killed sweep left
    time.sleep(2.5)  # past the grace period of 2 s
    out = mlx("sweep", "-c", sweep_config(ws, n_trials=3), check=0, timeout=90).stdout
    assert "Trial 1 never started (its sweep died): queued again" in out
    assert states(ws).count("COMPLETE") == 3 and "RUNNING" not in states(ws)
    assert_one_run_per_trial(ws, 3)


def test_ctrl_c_stops_the_sweep_cleanly_and_the_same_command_continues(mlx: Mlx, ws: Path) -> None:
    config = sweep_config(ws, n_trials=4)
    log = ws / "first.log"
    with open(log, "w", encoding="utf-8") as out:
        first = mlx.popen("sweep", "-c", config, stdout=out, stderr=out)
        _wait_for(log, " started: ", 2, first)  # the second trial's run is under way
        first.send_signal(signal.SIGINT)
        code = first.wait(timeout=60)
    assert code == 130, log.read_text(encoding="utf-8")
    assert "RUNNING" not in states(ws)  # the interrupted trial was settled, not left behind
    interrupted = [r for r in sweep_runs(ws) if r["status"] != "completed"]

    mlx("sweep", "-c", config, check=0)
    assert states(ws).count("COMPLETE") == 4
    assert_one_run_per_trial(ws, 4)  # the interrupted trial resumed its run, no second one
    finished = {r["run_dir"]: r["status"] for r in sweep_runs(ws)}
    assert all(finished[r["run_dir"]] == "completed" for r in interrupted)


def test_two_sweep_processes_share_one_study(mlx: Mlx, ws: Path) -> None:
    config = sweep_config(ws, n_trials=4)
    logs = [ws / "a.log", ws / "b.log"]
    files = [open(p, "w", encoding="utf-8") for p in logs]  # noqa: SIM115 - closed below
    try:
        procs = [mlx.popen("sweep", "-c", config, stdout=f, stderr=f) for f in files]
        codes = [p.wait(timeout=180) for p in procs]
    finally:
        for f in files:
            f.close()
    texts = [p.read_text(encoding="utf-8") for p in logs]
    assert codes == [0, 0], texts
    assert all(" started: " in text for text in texts), texts  # both did work
    assert states(ws) == ["COMPLETE"] * 4
    assert_one_run_per_trial(ws, 4)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"params": {"training.learning_rat": {"low": 0.1, "high": 0.2}}},
            "Sweep parameter 'training.learning_rat' is not a key of the base config",
        ),
        (
            {"params": {"training.learning_rate": {"low": 0.3, "high": 0.1}}},
            "low (0.3) must not be above high (0.1)",
        ),
        (
            {"params": {"training.learning_rate": {"low": 0, "high": 0.1, "log": True}}},
            "a log-scale range needs low > 0",
        ),
        ({"n_trials": None}, "set n_trials and/or timeout"),
    ],
)
def test_bad_sweeps_are_refused_before_any_trial(
    mlx: Mlx, ws: Path, settings: dict[str, Any], expected: str
) -> None:
    result = mlx("sweep", "-c", sweep_config(ws, **{"n_trials": 2, **settings}), check=1)
    assert expected in result.stderr
    assert not (ws / "runs" / "index.json").exists()


def test_unknown_metric_stops_the_sweep(mlx: Mlx, ws: Path) -> None:
    result = mlx("sweep", "-c", sweep_config(ws, n_trials=3, metric="val_acc"), check=1)
    [line] = error_lines(result.stderr)
    assert "Metric 'val_acc' is not among the final metrics of trial 0's run" in line
    assert "val_mse" in line
    assert states(ws) == ["FAIL"]


def test_missing_optuna_says_how_to_install_it(ws: Path) -> None:
    from e2e_helpers import base_env, hooked_command

    sweep_config(ws, n_trials=1)
    result = subprocess.run(
        hooked_command("import sys; sys.modules['optuna'] = None", ["sweep", "-c", "sweep.yaml"]),
        cwd=ws,
        env=base_env(ws),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    [line] = error_lines(result.stderr)
    assert "pip install 'mlharness[sweep]'" in line and "Traceback" not in result.stderr


def test_show_unknown_sweep(mlx: Mlx, ws: Path) -> None:
    [line] = error_lines(mlx("sweep", "show", "nope", check=1).stderr)
    assert "No sweep named 'nope'" in line
